package ociimage

import (
	"fmt"
	"strings"
	"unicode"
)

// Reference is an image name split the way containerd stores it.
type Reference struct {
	// Name is the fully qualified name without the tag,
	// e.g. "docker.io/library/demo".
	Name string
	// Tag is the tag, "latest" when the input had none.
	Tag string
}

// String returns "Name:Tag", the name ctr lists and `ctr run` expects.
func (r Reference) String() string { return r.Name + ":" + r.Tag }

// ParseReference normalises ref the way docker and containerd's reference
// package do, so that the name given to `runphi image build --ref` is the one
// `ctr run` finds: a missing registry becomes docker.io, a single-component
// docker.io path gets "library/", and a missing tag becomes "latest".
// Digests ("name@sha256:…") are rejected: the digest is what the build
// produces, so it cannot be an input.
func ParseReference(ref string) (Reference, error) {
	if ref == "" {
		return Reference{}, fmt.Errorf("image reference is empty")
	}
	if strings.Contains(ref, "@") {
		return Reference{}, fmt.Errorf("image reference %q: a digest cannot be given, it is computed by the build", ref)
	}
	if strings.ContainsFunc(ref, unicode.IsSpace) {
		return Reference{}, fmt.Errorf("image reference %q: contains white space", ref)
	}
	if strings.ToLower(ref) != ref && !hasDomain(ref) {
		return Reference{}, fmt.Errorf("image reference %q: repository names must be lowercase", ref)
	}
	name, tag := ref, "latest"
	// The tag separator is the last ':' after the last '/', so that a
	// registry port ("localhost:5000/x") is not mistaken for a tag.
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		name, tag = ref[:i], ref[i+1:]
		if !validTag(tag) {
			return Reference{}, fmt.Errorf("image reference %q: invalid tag %q (want [A-Za-z0-9_][A-Za-z0-9_.-]{0,127})", ref, tag)
		}
	}
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return Reference{}, fmt.Errorf("image reference %q: invalid repository name %q", ref, name)
	}
	if !hasDomain(name) {
		if !strings.Contains(name, "/") {
			name = "library/" + name
		}
		name = "docker.io/" + name
	}
	for _, part := range strings.Split(name, "/")[1:] {
		if !validPathComponent(part) {
			return Reference{}, fmt.Errorf("image reference %q: invalid path component %q (want lowercase letters, digits and . _ -)", ref, part)
		}
	}
	return Reference{Name: name, Tag: tag}, nil
}

// hasDomain reports whether the first path component of name is a registry
// host, by docker's rule: it contains '.' or ':' or is "localhost".
func hasDomain(name string) bool {
	i := strings.IndexByte(name, '/')
	if i < 0 {
		return false
	}
	first := name[:i]
	return strings.ContainsAny(first, ".:") || first == "localhost"
}

func validTag(tag string) bool {
	if tag == "" || len(tag) > 128 {
		return false
	}
	for i, c := range tag {
		ok := c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c == '.' || c == '-')
		if !ok {
			return false
		}
	}
	return true
}

func validPathComponent(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	first, last := s[0], s[len(s)-1]
	return first != '.' && first != '-' && first != '_' && last != '.' && last != '-' && last != '_'
}
