package console

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxLimitedClients bounds the clients whose login attempts are counted; beyond it (a flood from
// many addresses) they share one bucket, so the map cannot grow without bound.
const maxLimitedClients = 10000

// loginLimiter allows each client address (the TCP peer; no forwarded header is trusted) burst
// login attempts at once and then perMinute a minute.
type loginLimiter struct {
	limit rate.Limit
	burst int

	mu       sync.Mutex
	clients  map[string]*client
	overflow *rate.Limiter
}

type client struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLoginLimiter(perMinute float64, burst int) *loginLimiter {
	l := rate.Limit(perMinute / 60)
	return &loginLimiter{limit: l, burst: burst, clients: map[string]*client{}, overflow: rate.NewLimiter(l, burst)}
}

// allow takes one attempt for the client at remoteAddr; when none is left it returns how long until
// one is.
func (l *loginLimiter) allow(remoteAddr string, now time.Time) (time.Duration, bool) {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.clients[host]
	if !ok {
		if len(l.clients) >= maxLimitedClients {
			full := time.Duration(float64(l.burst) / float64(l.limit) * float64(time.Second))
			for k, x := range l.clients { // a client idle long enough has its full burst again: forget it
				if now.Sub(x.seen) > full {
					delete(l.clients, k)
				}
			}
		}
		if len(l.clients) >= maxLimitedClients {
			c = &client{lim: l.overflow}
		} else {
			c = &client{lim: rate.NewLimiter(l.limit, l.burst)}
			l.clients[host] = c
		}
	}
	c.seen = now
	r := c.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}
