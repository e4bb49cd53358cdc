//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ctr prints errors as text, and a 2.x ctr drops the error class from it,
// so the class a failed Create carries is read here from the daemon's gRPC
// Tasks API directly: the code a CRI client or the containerd Go client sees.

// createTaskStatus asks the daemon to create the task of the existing
// container id (made by `ctr run` or `ctr container create`, whose snapshot
// key is the container id) and returns the gRPC status. A task that gets
// created is deleted again and reported as an OK status.
func (d *daemon) createTaskStatus(t *testing.T, id string) *status.Status {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+d.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", d.sock, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The header containerd reads the namespace from.
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-namespace", namespace)

	mounts, err := snapshotsapi.NewSnapshotsClient(conn).Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: "overlayfs", Key: id})
	if err != nil {
		t.Fatalf("snapshot mounts of %s: %v", id, err)
	}
	tasks := tasksapi.NewTasksClient(conn)
	_, err = tasks.Create(ctx, &tasksapi.CreateTaskRequest{ContainerID: id, Rootfs: mounts.Mounts})
	st := status.Convert(err)
	t.Logf("gRPC Tasks.Create %s → %s: %s", id, st.Code(), st.Message())
	if err == nil {
		tasks.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: id})
	}
	return st
}
