package shim

import (
	"fmt"

	bootstrap "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"
)

// bootstrapVersion is the task API version this binary's server speaks at
// most (it registers v2 and v3 alike) and announces to 2.3+ daemons. A
// grouped start announces the version of the server already running
// instead (containerd#10888), which listenSocket asks it for.
const bootstrapVersion = 3

// parseBootstrapParams tells the two kinds of `start` callers apart from
// what they wrote on stdin.
//
// containerd 2.3+ writes a protobuf BootstrapParams. containerd 1.6 to 2.2
// write the runtime options as a protobuf Any, or nothing at all. An Any can
// happen to decode as a BootstrapParams (its type_url lands in instance_id,
// its value in namespace), so the params are only trusted when instance_id
// and namespace equal the -id and -namespace flags that every daemon passes.
// It returns nil for a legacy caller.
func parseBootstrapParams(stdin []byte, id, namespace string) *bootstrap.BootstrapParams {
	if id == "" || namespace == "" {
		return nil
	}
	var params bootstrap.BootstrapParams
	if err := proto.Unmarshal(stdin, &params); err != nil {
		return nil
	}
	if params.GetInstanceID() != id || params.GetNamespace() != namespace {
		return nil
	}
	return &params
}

// startAnswer is what `start` prints: a protobuf BootstrapResult with the
// server's task API version for a 2.3+ caller, and the plain socket address
// for a legacy one. The plain address is the only answer containerd 1.6
// understands (it dials the trimmed output as is); 1.7 to 2.2 fall back to
// it when the output is not JSON and treat it as task API version 2, which
// every runphi server speaks.
func startAnswer(params *bootstrap.BootstrapParams, address string, version uint32) ([]byte, error) {
	if params == nil {
		return []byte(address), nil
	}
	out, err := proto.Marshal(&bootstrap.BootstrapResult{
		Version:  int32(version),
		Address:  address,
		Protocol: "ttrpc",
	})
	if err != nil {
		return nil, fmt.Errorf("marshal bootstrap result: %w", err)
	}
	return out, nil
}

// debugRequested reports whether a 2.3+ caller asked for debug (or more
// verbose) logging. Legacy callers pass -debug instead.
func debugRequested(params *bootstrap.BootstrapParams) bool {
	return params != nil && params.GetLogLevel() <= bootstrap.LogLevel_LOG_LEVEL_DEBUG
}
