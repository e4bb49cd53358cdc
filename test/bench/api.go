//go:build bench

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"
)

// api drives containerd's gRPC services directly, the way a client library
// does, so that churn and the API start latency measure the daemon and the
// runtime, not ctr's process start. Containers are cloned from a template
// that ctr created (its spec, image and snapshot parent), so both runtimes
// get exactly what `ctr run` would give them.
type api struct {
	conn       *grpc.ClientConn
	containers containersapi.ContainersClient
	snapshots  snapshotsapi.SnapshotsClient
	tasks      tasksapi.TasksClient
}

func dialAPI(sock string) (*api, error) {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial containerd at %s: %w", sock, err)
	}
	return &api{
		conn:       conn,
		containers: containersapi.NewContainersClient(conn),
		snapshots:  snapshotsapi.NewSnapshotsClient(conn),
		tasks:      tasksapi.NewTasksClient(conn),
	}, nil
}

// nsContext is ctx in the bench namespace, with a timeout.
func nsContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	return metadata.AppendToOutgoingContext(ctx, "containerd-namespace", namespace), cancel
}

// template is a container ctr created, to clone.
type template struct {
	c      *containersapi.Container
	parent string // the image's snapshot: the parent of each clone's
	spec   specs.Spec
}

// newTemplate creates a container of ref on runtime with `ctr run -d`
// (which, unlike `ctr container create`, sets runc's root in the runtime
// options), removes its task, and reads the container back.
func (d *daemon) newTemplate(a *api, id, runtime, ref string) (*template, error) {
	if _, err := d.ctr(30*time.Second, d.run("-d", runtime, ref, id)...); err != nil {
		return nil, err
	}
	if err := a.kill(id); err != nil {
		return nil, err
	}
	ctx, cancel := nsContext(10 * time.Second)
	defer cancel()
	if _, err := a.tasks.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: id}); err != nil {
		return nil, fmt.Errorf("delete the task of template %s: %w", id, err)
	}
	got, err := a.containers.Get(ctx, &containersapi.GetContainerRequest{ID: id})
	if err != nil {
		return nil, fmt.Errorf("get container %s: %w", id, err)
	}
	st, err := a.snapshots.Stat(ctx, &snapshotsapi.StatSnapshotRequest{Snapshotter: got.Container.Snapshotter, Key: got.Container.SnapshotKey})
	if err != nil {
		return nil, fmt.Errorf("stat snapshot %s: %w", got.Container.SnapshotKey, err)
	}
	t := &template{c: got.Container, parent: st.Info.Parent}
	if err := json.Unmarshal(got.Container.Spec.GetValue(), &t.spec); err != nil {
		return nil, fmt.Errorf("decode the spec of %s: %w", id, err)
	}
	return t, nil
}

// create makes container id from the template and its task, and returns
// once containerd answered Create.
func (a *api) create(t *template, id string) error {
	ctx, cancel := nsContext(30 * time.Second)
	defer cancel()
	spec := t.spec
	if spec.Linux != nil {
		linux := *spec.Linux
		if linux.CgroupsPath != "" {
			linux.CgroupsPath = "/" + namespace + "/" + id
		}
		spec.Linux = &linux
	}
	raw, err := json.Marshal(&spec)
	if err != nil {
		return err
	}
	c := &containersapi.Container{
		ID:          id,
		Image:       t.c.Image,
		Runtime:     t.c.Runtime,
		Spec:        &anypb.Any{TypeUrl: t.c.Spec.GetTypeUrl(), Value: raw},
		Snapshotter: t.c.Snapshotter,
		SnapshotKey: id,
		Labels:      t.c.Labels,
	}
	// The container first: it keeps the snapshot from the garbage
	// collector.
	if _, err := a.containers.Create(ctx, &containersapi.CreateContainerRequest{Container: c}); err != nil {
		return fmt.Errorf("create container %s: %w", id, err)
	}
	mounts, err := a.snapshots.Prepare(ctx, &snapshotsapi.PrepareSnapshotRequest{Snapshotter: t.c.Snapshotter, Key: id, Parent: t.parent})
	if err != nil {
		return fmt.Errorf("prepare snapshot %s: %w", id, err)
	}
	if _, err := a.tasks.Create(ctx, &tasksapi.CreateTaskRequest{ContainerID: id, Rootfs: mounts.Mounts}); err != nil {
		return fmt.Errorf("create task %s: %w", id, err)
	}
	return nil
}

func (a *api) start(id string) error {
	ctx, cancel := nsContext(30 * time.Second)
	defer cancel()
	if _, err := a.tasks.Start(ctx, &tasksapi.StartRequest{ContainerID: id}); err != nil {
		return fmt.Errorf("start task %s: %w", id, err)
	}
	return nil
}

// kill sends SIGKILL and waits for the exit.
func (a *api) kill(id string) error {
	ctx, cancel := nsContext(30 * time.Second)
	defer cancel()
	// Wait first, so that the exit cannot be missed between the two.
	waited := make(chan error, 1)
	go func() {
		_, err := a.tasks.Wait(ctx, &tasksapi.WaitRequest{ContainerID: id})
		waited <- err
	}()
	if _, err := a.tasks.Kill(ctx, &tasksapi.KillRequest{ContainerID: id, Signal: 9}); err != nil {
		return fmt.Errorf("kill task %s: %w", id, err)
	}
	if err := <-waited; err != nil {
		return fmt.Errorf("wait for task %s: %w", id, err)
	}
	return nil
}

// remove deletes the task (if any), the container and its snapshot.
func (a *api) remove(id string) error {
	ctx, cancel := nsContext(30 * time.Second)
	defer cancel()
	if _, err := a.tasks.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: id}); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete task %s: %w", id, err)
	}
	got, err := a.containers.Get(ctx, &containersapi.GetContainerRequest{ID: id})
	if err != nil {
		return fmt.Errorf("get container %s: %w", id, err)
	}
	if _, err := a.containers.Delete(ctx, &containersapi.DeleteContainerRequest{ID: id}); err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	if _, err := a.snapshots.Remove(ctx, &snapshotsapi.RemoveSnapshotRequest{Snapshotter: got.Container.Snapshotter, Key: got.Container.SnapshotKey}); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove snapshot %s: %w", got.Container.SnapshotKey, err)
	}
	return nil
}

// stopAndRemove kills a running task and removes everything of id.
func (a *api) stopAndRemove(id string) error {
	if err := a.kill(id); err != nil {
		return err
	}
	return a.remove(id)
}

// status is the task's status as containerd reports it.
func (a *api) status(id string) (string, error) {
	ctx, cancel := nsContext(10 * time.Second)
	defer cancel()
	r, err := a.tasks.Get(ctx, &tasksapi.GetRequest{ContainerID: id})
	if err != nil {
		return "", fmt.Errorf("get task %s: %w", id, err)
	}
	return r.Process.Status.String(), nil
}

func isNotFound(err error) bool {
	return err != nil && strings.Contains(err.Error(), "not found")
}
