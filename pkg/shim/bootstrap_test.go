package shim

import (
	"fmt"
	"testing"

	bootstrap "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseBootstrapParams(t *testing.T) {
	options, err := anypb.New(&runtimeoptions.Options{ConfigPath: "/etc/runphi/runphi.toml"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		stdin  []byte
		newAPI bool
	}{
		{"2.3+ caller with matching id and namespace", mustMarshal(t, &bootstrap.BootstrapParams{
			InstanceID: "t1", Namespace: "default", ContainerdVersion: "v2.4.2",
		}), true},
		{"forged params with another id are a legacy caller", mustMarshal(t, &bootstrap.BootstrapParams{
			InstanceID: "t2", Namespace: "default",
		}), false},
		{"forged params with another namespace are a legacy caller", mustMarshal(t, &bootstrap.BootstrapParams{
			InstanceID: "t1", Namespace: "k8s.io",
		}), false},
		{"empty stdin (1.6 without runtime options) is a legacy caller", nil, false},
		{"runtime options Any (1.6 to 2.2 with options) is a legacy caller", mustMarshal(t, options), false},
		{"garbage is a legacy caller", []byte{0xff, 0xff, 0xff}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := parseBootstrapParams(tc.stdin, "t1", "default")
			if (got != nil) != tc.newAPI {
				t.Fatalf("parseBootstrapParams = %v, want 2.3+ caller: %v", got, tc.newAPI)
			}
		})
	}
}

func TestParseBootstrapParamsNeedsFlags(t *testing.T) {
	// With no -id/-namespace an empty stdin would "match" empty params.
	if got := parseBootstrapParams(nil, "", ""); got != nil {
		t.Fatalf("empty flags and empty stdin taken as a 2.3+ caller: %v", got)
	}
}

func TestStartAnswer(t *testing.T) {
	const addr = "unix:///run/containerd/s/0123"
	t.Run("legacy callers get the plain address", func(t *testing.T) {
		out, err := startAnswer(nil, addr, 3)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != addr {
			t.Fatalf("answer %q, want %q", out, addr)
		}
	})
	for _, version := range []uint32{3, 2} {
		t.Run(fmt.Sprintf("2.3+ callers get a protobuf BootstrapResult with the server's version %d over ttrpc", version), func(t *testing.T) {
			out, err := startAnswer(&bootstrap.BootstrapParams{InstanceID: "t1", Namespace: "default"}, addr, version)
			if err != nil {
				t.Fatal(err)
			}
			var res bootstrap.BootstrapResult
			if err := proto.Unmarshal(out, &res); err != nil {
				t.Fatal(err)
			}
			if res.GetVersion() != int32(version) || res.GetAddress() != addr || res.GetProtocol() != "ttrpc" {
				t.Fatalf("result %v, want version %d, address %s, protocol ttrpc", &res, version, addr)
			}
		})
	}
}

func TestDebugRequested(t *testing.T) {
	cases := []struct {
		name   string
		params *bootstrap.BootstrapParams
		want   bool
	}{
		{"legacy caller", nil, false},
		{"info", &bootstrap.BootstrapParams{LogLevel: bootstrap.LogLevel_LOG_LEVEL_INFO}, false},
		{"debug", &bootstrap.BootstrapParams{LogLevel: bootstrap.LogLevel_LOG_LEVEL_DEBUG}, true},
		{"trace", &bootstrap.BootstrapParams{LogLevel: bootstrap.LogLevel_LOG_LEVEL_TRACE}, true},
		{"warn", &bootstrap.BootstrapParams{LogLevel: bootstrap.LogLevel_LOG_LEVEL_WARN}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := debugRequested(tc.params); got != tc.want {
				t.Fatalf("debugRequested = %v, want %v", got, tc.want)
			}
		})
	}
}
