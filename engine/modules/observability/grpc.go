package observability

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// grpcClients export over OTLP/gRPC.
type grpcClients struct {
	conn   *grpc.ClientConn
	traces coltracepb.TraceServiceClient
	logs   collogspb.LogsServiceClient
	md     metadata.MD
}

func newGRPCClients(o exportOptions) (*grpcClients, error) {
	if o.grpcTarget == "" {
		return nil, fmt.Errorf("OTLP/gRPC endpoint has no host:port")
	}
	creds := insecure.NewCredentials()
	if o.grpcTLS {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	// NewClient does not dial: the connection is made on the first export.
	conn, err := grpc.NewClient(o.grpcTarget, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("OTLP/gRPC client for %s: %w", o.grpcTarget, err)
	}
	md := metadata.MD{}
	for k, v := range o.headers {
		md.Append(k, v)
	}
	return &grpcClients{conn: conn, traces: coltracepb.NewTraceServiceClient(conn),
		logs: collogspb.NewLogsServiceClient(conn), md: md}, nil
}

func (g *grpcClients) ctx(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	if len(g.md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, g.md)
	}
	return ctx, cancel
}

func (g *grpcClients) exportTraces(ctx context.Context, req *coltracepb.ExportTraceServiceRequest, timeout time.Duration) error {
	ctx, cancel := g.ctx(ctx, timeout)
	defer cancel()
	_, err := g.traces.Export(ctx, req)
	return err
}

func (g *grpcClients) exportLogs(ctx context.Context, req *collogspb.ExportLogsServiceRequest, timeout time.Duration) error {
	ctx, cancel := g.ctx(ctx, timeout)
	defer cancel()
	_, err := g.logs.Export(ctx, req)
	return err
}

func (g *grpcClients) close() { g.conn.Close() }
