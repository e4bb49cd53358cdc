package caronte

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// containerd runs a shim's error text through a printf before the user
// sees it, so a stdio URI quoted whole (nerdctl's carries
// "?_NERDCTL_INTERNAL_LOGGING=%2Ftmp…") came out as "%!F(MISSING)tmp…".
// A refused URI is named by its scheme and path only, never its query, and
// the message has no '%' for a printf to eat.
func TestStdioURIErrorsNameSchemeAndPathOnly(t *testing.T) {
	tests := []struct {
		name  string
		uri   string
		class error
		want  string
	}{
		{
			name:  "nerdctl's binary logger",
			uri:   "binary:///opt/nerdctl/bin/nerdctl?_NERDCTL_INTERNAL_LOGGING=%2Ftmp%2Fnerdctl-data",
			class: errdefs.ErrNotImplemented,
			want:  "binary:// logging to /opt/nerdctl/bin/nerdctl is not supported for partitions",
		},
		{
			name:  "a URI that does not parse",
			uri:   "fifo:///run/x%zz?key=%2F",
			class: errdefs.ErrInvalidArgument,
			want:  "fifo:// stdio URI does not parse",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := stdioPath(tt.uri)
			if !errors.Is(err, tt.class) {
				t.Fatalf("stdioPath(%q) = %v, want %v", tt.uri, err, tt.class)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not say %q", msg, tt.want)
			}
			if strings.ContainsAny(msg, "%?") {
				t.Errorf("error %q quotes the URI's query or escapes", msg)
			}
		})
	}
}
