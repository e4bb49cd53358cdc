package shim

import (
	"fmt"
	"strings"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runphi/runphi/pkg/config"
)

// configBodySource names a configuration sent inline in the runtime
// options, in Config.Source and in errors.
const configBodySource = "runtime options config_body"

// loadConfig resolves the configuration of one task. The first of these
// that is present wins: the runtime options' config_path (what CRI and
// `ctr run --runtime-config-path` send), the runtime options' config_body
// (CRI on containerd 1.7+ sends the runtime's TOML options table there when
// no path is configured), the file named by $RUNPHI_CONFIG, and
// /etc/runphi/runphi.toml. Only the last may be missing. lookup says where
// the last two are (its zero value: the real environment and paths).
// Every error wraps errdefs.ErrInvalidArgument.
func loadConfig(options *anypb.Any, lookup config.LoadOptions) (config.Config, error) {
	ro, err := parseRuntimeOptions(options)
	if err != nil {
		return config.Config{}, err
	}
	lookup.Path, lookup.Origin = ro.GetConfigPath(), "runtime options config_path"
	lookup.Body, lookup.BodySource = ro.GetConfigBody(), configBodySource
	cfg, err := config.Load(lookup)
	if err != nil {
		return config.Config{}, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return cfg, nil
}

// runtimeOptionsName is the full name of runtimeoptions.v1.Options, the
// type CRI and ctr send for runtimes other than runc.
var runtimeOptionsName = string((&runtimeoptions.Options{}).ProtoReflect().Descriptor().FullName())

// parseRuntimeOptions decodes CreateTaskRequest.options. Absent options and
// options of another type (a runc Options sent to the wrong runtime, say)
// mean no options; a runtimeoptions.v1.Options that does not decode is an
// error.
func parseRuntimeOptions(options *anypb.Any) (*runtimeoptions.Options, error) {
	if options == nil || options.GetTypeUrl() == "" {
		return nil, nil
	}
	url := options.GetTypeUrl()
	if url[strings.LastIndexByte(url, '/')+1:] != runtimeOptionsName {
		return nil, nil
	}
	var ro runtimeoptions.Options
	if err := proto.Unmarshal(options.GetValue(), &ro); err != nil {
		return nil, fmt.Errorf("decode runtime options %s: %w: %w", url, err, errdefs.ErrInvalidArgument)
	}
	return &ro, nil
}
