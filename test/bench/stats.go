//go:build bench

package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// samples is one measured quantity, one value per run.
type samples []float64

func (s samples) sorted() []float64 {
	c := slices.Clone([]float64(s))
	slices.Sort(c)
	return c
}

// median of the runs (the mean of the middle two for an even count).
func (s samples) median() float64 {
	if len(s) == 0 {
		return 0
	}
	c := s.sorted()
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

func (s samples) min() float64 { return slices.Min(s) }
func (s samples) max() float64 { return slices.Max(s) }

// cell formats "median (min–max)" with the given unit and precision.
func (s samples) cell(format string) string {
	if len(s) == 0 {
		return "–"
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.median(), s.min(), s.max())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ratio formats a/b.
func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// loadSampler records the 1-minute load average along the run.
type loadSampler struct {
	values samples
}

func (l *loadSampler) sample() {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return
	}
	var one float64
	if _, err := fmt.Sscan(string(data), &one); err == nil {
		l.values = append(l.values, one)
	}
}
