// Command taskgate-example is a taskgate client in Go, built on stubs that
// protoc-gen-go and protoc-gen-go-grpc generate from proto/. It walks through the
// RPCs and the answers a caller meets and prints one JSON line each. From the
// repository's root, on Debian's Go packages (as tests/example_clients.py does):
//
//	protoc -I proto --go_out=$GOPATH/src --go-grpc_out=$GOPATH/src taskgate/v1/task_service.proto
//	GO111MODULE=off GOPATH=$GOPATH:/usr/share/gocode go build -o taskgate-example ./examples/go
//	./taskgate-example 127.0.0.1:50051
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	taskgatev1 "github.com/taskgate/taskgate/gen/go/taskgate/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

const callTimeout = 30 * time.Second

var wait = durationpb.New(10 * time.Second)

func main() {
	address := "127.0.0.1:50051"
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	// WithInsecure: plaintext, for a local gateway; use grpc.WithTransportCredentials for TLS.
	conn, err := grpc.Dial(address, grpc.WithInsecure())
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	if err := walkThrough(taskgatev1.NewTaskServiceClient(conn)); err != nil {
		fail(err)
	}
}

func walkThrough(client taskgatev1.TaskServiceClient) error {
	steps := []func(taskgatev1.TaskServiceClient) error{
		submitAndWait, execute, watchProgress, failure, notFound, idempotentRetry,
	}
	for _, step := range steps {
		if err := step(client); err != nil {
			return err
		}
	}
	return nil
}

func submitAndWait(client taskgatev1.TaskServiceClient) error {
	ctx, cancel := callContext()
	defer cancel()
	submitted, err := client.Submit(ctx, &taskgatev1.SubmitRequest{Task: "tasks.add", ArgsJson: "[2, 3]"})
	if err != nil {
		return err
	}
	result, err := client.GetResult(ctx, &taskgatev1.GetResultRequest{TaskId: submitted.TaskId, Wait: wait})
	if err != nil {
		return err
	}
	return print(map[string]any{"step": "submit", "state": result.State.String(), "result": json.RawMessage(result.GetResultJson())})
}

func execute(client taskgatev1.TaskServiceClient) error {
	ctx, cancel := callContext()
	defer cancel()
	submit := &taskgatev1.SubmitRequest{Task: "tasks.add", ArgsJson: "[4, 5]"}
	result, err := client.Execute(ctx, &taskgatev1.ExecuteRequest{Submit: submit, Wait: wait})
	if err != nil {
		return err
	}
	return print(map[string]any{"step": "execute", "state": result.State.String(), "result": json.RawMessage(result.GetResultJson())})
}

func watchProgress(client taskgatev1.TaskServiceClient) error {
	ctx, cancel := callContext()
	defer cancel()
	submitted, err := client.Submit(ctx, &taskgatev1.SubmitRequest{Task: "tasks.progress", ArgsJson: "[3, 0.3]"})
	if err != nil {
		return err
	}
	stream, err := client.WatchStatus(ctx, &taskgatev1.WatchStatusRequest{TaskId: submitted.TaskId})
	if err != nil {
		return err
	}
	states, progress := []string{}, []json.RawMessage{}
	for {
		update, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		states = append(states, update.Status.StateName)
		if update.Status.StateName == "PROGRESS" {
			progress = append(progress, json.RawMessage(update.Status.MetaJson))
		}
	}
	return print(map[string]any{"step": "watch", "states": states, "progress": progress})
}

func failure(client taskgatev1.TaskServiceClient) error {
	ctx, cancel := callContext()
	defer cancel()
	submitted, err := client.Submit(ctx, &taskgatev1.SubmitRequest{Task: "tasks.fail", ArgsJson: `["boom"]`})
	if err != nil {
		return err
	}
	request := &taskgatev1.GetResultRequest{TaskId: submitted.TaskId, Wait: wait}
	outcome, err := client.GetResult(ctx, request)
	if err != nil {
		return err
	}
	taskError := outcome.GetError()
	if err := print(map[string]any{"step": "error", "state": outcome.State.String(), "type": taskError.GetType(), "message": taskError.GetMessage()}); err != nil {
		return err
	}
	request.Propagate = true
	_, err = client.GetResult(ctx, request)
	return printStatus("propagate", err)
}

// printStatus prints a failed call's code and its google.rpc.Status details, which
// status.FromError decodes from the grpc-status-details-bin trailer.
func printStatus(step string, err error) error {
	if err == nil {
		return fmt.Errorf("%s: the call succeeded but an error was expected", step)
	}
	rich := status.Convert(err)
	details := []map[string]any{}
	for _, detail := range rich.Details() {
		switch detail := detail.(type) {
		case *errdetails.ErrorInfo:
			details = append(details, map[string]any{"type": "google.rpc.ErrorInfo", "value": map[string]any{"reason": detail.Reason, "domain": detail.Domain, "metadata": detail.Metadata}})
		case *taskgatev1.TaskError:
			details = append(details, map[string]any{"type": "taskgate.v1.TaskError", "value": map[string]any{"type": detail.Type, "message": detail.Message, "module": detail.Module}})
		}
	}
	return print(map[string]any{"step": step, "code": rich.Code(), "details": details})
}

func notFound(client taskgatev1.TaskServiceClient) error {
	ctx, cancel := callContext()
	defer cancel()
	_, err := client.GetStatus(ctx, &taskgatev1.GetStatusRequest{TaskId: randomUUID()})
	return print(map[string]any{"step": "not_found", "code": status.Code(err)})
}

func idempotentRetry(client taskgatev1.TaskServiceClient) error {
	ctx, cancel := callContext()
	defer cancel()
	request := &taskgatev1.SubmitRequest{Task: "tasks.add", ArgsJson: "[1, 1]", IdempotencyKey: randomUUID()}
	first, err := client.Submit(ctx, request)
	if err != nil {
		return err
	}
	retried, err := client.Submit(ctx, request)
	if err != nil {
		return err
	}
	return print(map[string]any{"step": "idempotent", "first": first.TaskId, "retried": retried.TaskId, "deduplicated": retried.Deduplicated})
}

func callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

func randomUUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		fail(err)
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80 // version 4, RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func print(line map[string]any) error {
	encoded, err := json.Marshal(line)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(encoded))
	return err
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
