package bench

import (
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ http://127.0.0.1:40000/bench/echo
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.50ms    2.10ms  40.00ms   80.00%
    Req/Sec     7.00k   500.00     8.00k    70.00%
  Latency Distribution
     50%    4.19ms
     75%    5.00ms
     90%    6.50ms
     99%  850.00us
  69990 requests in 5.00s, 9.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  13998.12
Transfer/sec:      1.80MB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.RequestsSec != 13998.12 || r.Requests != 69990 || r.Errors != 7 ||
		r.P50 != Millis(4190*time.Microsecond) || r.P99 != Millis(850*time.Microsecond) {
		t.Errorf("parsed %+v", r)
	}
	if _, err := parseWrk("garbage"); err == nil {
		t.Error("garbage parsed")
	}
}
