package httpcache

import "sync/atomic"

// Stats counts what a Cache did. Each field is a total since New.
type Stats struct {
	Hits        uint64 // responses served from the cache (304s included)
	NotModified uint64 // 304 Not Modified answers, from the cache or after a render
	Misses      uint64 // cacheable requests that found no fresh entry
	Stale       uint64 // entries found whose dependencies had changed (deleted, rendered again)
	Renders     uint64 // handler calls for cacheable requests
	Stored      uint64 // responses stored
	NotStored   uint64 // rendered responses not storable (status, Set-Cookie, private, size, Vary)
	Fenced      uint64 // rendered responses not stored because a row they read changed meanwhile
	Waited      uint64 // requests served by another request's render, after waiting
	Bypassed    uint64 // requests not cacheable (method, route off, credentials, odd URL)
	Errors      uint64 // Redis failures (the request was rendered instead)
}

type counters struct {
	hits, notModified, misses, stale, renders, stored, notStored, fenced, waited, bypassed, errors atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Hits: c.hits.Load(), NotModified: c.notModified.Load(), Misses: c.misses.Load(), Stale: c.stale.Load(),
		Renders: c.renders.Load(), Stored: c.stored.Load(), NotStored: c.notStored.Load(), Fenced: c.fenced.Load(),
		Waited: c.waited.Load(), Bypassed: c.bypassed.Load(), Errors: c.errors.Load(),
	}
}
