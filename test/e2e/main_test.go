//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	var err error
	imagesDir, err = os.MkdirTemp("", "runphi-e2e-images-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	stopDaemons()
	os.RemoveAll(imagesDir)
	os.Exit(code)
}
