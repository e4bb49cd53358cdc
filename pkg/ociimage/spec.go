package ociimage

// The structs below are the subset of the OCI image specification
// (opencontainers/image-spec v1.1: specs-go/v1 index.go, manifest.go,
// config.go, descriptor.go, layout.go) that a single-layer image needs.
// They are written here rather than imported to keep the module's dependency
// set small; the JSON names are the spec's.

// Media types written by Build.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// Annotations on the index entry. containerd's importer names the image after
// AnnotationImageName; other OCI tools read the tag from AnnotationRefName.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// Descriptor points at one blob of the layout.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Platform is the platform an image runs on, in GOOS/GOARCH terms.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// Index is index.json at the root of the layout.
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// Manifest is the image manifest blob.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Config is the image configuration blob.
type Config struct {
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Variant      string          `json:"variant,omitempty"`
	Config       ExecConfig      `json:"config"`
	RootFS       RootFS          `json:"rootfs"`
	History      []HistoryRecord `json:"history,omitempty"`
}

// ExecConfig is what containerd turns into the OCI runtime spec's process.
type ExecConfig struct {
	Env        []string          `json:"Env,omitempty"`
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	Cmd        []string          `json:"Cmd,omitempty"`
	WorkingDir string            `json:"WorkingDir,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

// RootFS lists the uncompressed digests of the layers.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// HistoryRecord says how a layer was made.
type HistoryRecord struct {
	CreatedBy string `json:"created_by,omitempty"`
}

// layoutFile is the oci-layout marker file.
type layoutFile struct {
	Version string `json:"imageLayoutVersion"`
}
