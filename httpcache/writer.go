package httpcache

import (
	"bytes"
	"net/http"
)

// capture is the ResponseWriter a render writes to: it buffers the response, up to
// max bytes of body, so that it can be stored and its headers completed; past max (or
// on Flush) it writes through to w, and the response is not stored.
type capture struct {
	w       http.ResponseWriter
	header  http.Header
	status  int
	body    bytes.Buffer
	max     int
	through bool // writing through to w
}

func newCapture(w http.ResponseWriter, max int) *capture {
	return &capture{w: w, header: make(http.Header), max: max}
}

func (c *capture) Header() http.Header {
	if c.through {
		return c.w.Header()
	}
	return c.header
}

func (c *capture) WriteHeader(status int) {
	if c.status != 0 {
		return
	}
	if status >= 100 && status < 200 { // informational: pass on, wait for the final one
		c.w.WriteHeader(status)
		return
	}
	c.status = status
}

func (c *capture) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.through {
		return c.w.Write(p)
	}
	if c.body.Len()+len(p) > c.max {
		c.passThrough()
		return c.w.Write(p)
	}
	return c.body.Write(p)
}

// Flush writes through from now on: the handler streams.
func (c *capture) Flush() {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if !c.through {
		c.passThrough()
	}
	if f, ok := c.w.(http.Flusher); ok {
		f.Flush()
	}
}

// passThrough sends what was buffered and switches to writing through.
func (c *capture) passThrough() {
	c.through = true
	h := c.w.Header()
	for k, v := range c.header {
		h[k] = v
	}
	h.Set("X-Cache", "BYPASS")
	c.w.WriteHeader(c.status)
	_, _ = c.w.Write(c.body.Bytes())
	c.body = bytes.Buffer{}
}

// Unwrap lets http.ResponseController reach w.
func (c *capture) Unwrap() http.ResponseWriter { return c.w }
