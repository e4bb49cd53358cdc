package partition

import (
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// CheckError is a cell configuration the offline checks reject
// (jailhouse.Check): creating it would fail or, worse, succeed and misbehave
// (the hypervisor checks no overlaps). It matches
// errdefs.ErrFailedPrecondition.
type CheckError struct {
	Cell     string
	Findings []jailhouse.Finding
}

func (e *CheckError) Error() string {
	msgs := make([]string, len(e.Findings))
	for i, f := range e.Findings {
		msgs[i] = f.Field + ": " + f.Msg
	}
	return fmt.Sprintf("cell %q fails the configuration checks: %s", e.Cell, strings.Join(msgs, "; "))
}

// Unwrap returns errdefs.ErrFailedPrecondition.
func (e *CheckError) Unwrap() error { return errdefs.ErrFailedPrecondition }

// checkCell runs the checks of `jailhouse config check` on cell against the
// board's system configuration and the saved configurations of the other
// live partitions in the ledger, and fails on any error about cell. The
// root cell's and the others' own findings are not about cell and are not
// looked for (`runphi config check` reports them).
func checkCell(b *Board, l *Ledger, owner string, cell *jailhouse.Cell) error {
	var others []*jailhouse.Cell
	if entries, err := l.Entries(); err == nil {
		for _, e := range entries {
			if e.live(owner) {
				continue
			}
			data, err := os.ReadFile(l.ConfigPath(e.Cell))
			if err != nil {
				continue // not created yet, or created before configs were kept
			}
			if c, err := jailhouse.DecodeCell(data); err == nil {
				others = append(others, c)
			}
		}
	}
	if bad := cellErrors(jailhouse.CheckCell(b.system, cell, others...)); len(bad) > 0 {
		return &CheckError{Cell: cell.Name, Findings: bad}
	}
	return nil
}

// cellErrors keeps the findings that fail a create: errors, not warnings.
func cellErrors(findings []jailhouse.Finding) []jailhouse.Finding {
	var bad []jailhouse.Finding
	for _, f := range findings {
		if f.Severity == jailhouse.SeverityError {
			bad = append(bad, f)
		}
	}
	return bad
}
