package cluster

// Transport measurement behind the choice of Redis streams for forwarding
// (see the package doc and BENCHMARKS.md): the same request/reply round
// trip between two "engines" in one process, once through two Redis
// streams (request stream of the callee, reply stream of the caller, each
// read by one XREAD BLOCK loop) and once over one loopback WebSocket.
// No engine is involved: this isolates what the transport costs.
//
//	go test -run '^$' -bench Transport -benchtime 3s ./engine/cluster

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/iii-workbench/iii/engine/store/storetest"
)

type waiters struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (w *waiters) add(id string) chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.m[id] = ch
	w.mu.Unlock()
	return ch
}

func (w *waiters) done(id string) {
	w.mu.Lock()
	ch := w.m[id]
	delete(w.m, id)
	w.mu.Unlock()
	if ch != nil {
		ch <- struct{}{}
	}
}

// roundTrips runs b.N round trips from par goroutines per CPU and reports
// p50/p99 latency beside ns/op (the inverse of throughput).
func roundTrips(b *testing.B, par int, call func(id string) chan struct{}) {
	var seq atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(par)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			id := strconv.FormatInt(seq.Add(1), 10)
			t := time.Now()
			<-call(id)
			mine = append(mine, time.Since(t))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

func BenchmarkTransportRedisStream(b *testing.B) {
	srv := storetest.StartServer(b)
	opt, _ := redis.ParseURL(srv.URL())
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	w := &waiters{m: map[string]chan struct{}{}}
	// read loops one stream and hands each entry to fn.
	read := func(stream string, fn func(pipe redis.Pipeliner, x redis.XMessage)) {
		defer wg.Done()
		last := "$"
		for ctx.Err() == nil {
			res, err := rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{stream, last}, Count: 512, Block: time.Second}).Result()
			if err != nil {
				continue
			}
			pipe := rdb.Pipeline()
			for _, s := range res {
				for _, x := range s.Messages {
					last = x.ID
					fn(pipe, x)
				}
			}
			if pipe.Len() > 0 {
				pipe.Exec(ctx)
			}
		}
	}
	wg.Add(2)
	go read("req", func(pipe redis.Pipeliner, x redis.XMessage) {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: "rep", MaxLen: 10000, Approx: true, Values: []any{"id", x.Values["id"], "r", "{}"}})
	})
	go read("rep", func(_ redis.Pipeliner, x redis.XMessage) { w.done(x.Values["id"].(string)) })
	time.Sleep(50 * time.Millisecond) // both XREADs blocking before the first request
	rt := func(id string) chan struct{} {
		ch := w.add(id)
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: "req", MaxLen: 10000, Approx: true, Values: []any{"id", id, "d", `{"n":1}`}})
		return ch
	}
	b.Run("serial", func(b *testing.B) { roundTrips(b, 1, rt) })
	b.Run("parallel", func(b *testing.B) { roundTrips(b, 16, rt) })
}

func BenchmarkTransportWebSocket(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(rw, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if ws.Write(ctx, websocket.MessageText, data) != nil {
				return
			}
		}
	})}
	go hs.Serve(ln)
	defer hs.Close()
	ws, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.CloseNow()
	w := &waiters{m: map[string]chan struct{}{}}
	go func() {
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			w.done(string(data))
		}
	}()
	var wmu sync.Mutex
	rt := func(id string) chan struct{} {
		ch := w.add(id)
		wmu.Lock()
		ws.Write(ctx, websocket.MessageText, []byte(id))
		wmu.Unlock()
		return ch
	}
	b.Run("serial", func(b *testing.B) { roundTrips(b, 1, rt) })
	b.Run("parallel", func(b *testing.B) { roundTrips(b, 16, rt) })
}
