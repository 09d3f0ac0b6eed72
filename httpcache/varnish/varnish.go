// Package varnish purges Varnish Cache by tag: the purger the pgcache worker calls with
// the tags of the rows that changed, so that every Varnish node drops the HTTP responses
// built from them.
//
// It needs Varnish running a VCL that keeps the tags of the backend's `xkey` response
// header (vmod xkey, from varnish-modules) and accepts `PURGE` with the tags in an
// `xkey-purge` request header: deploy/varnish/pgcache.vcl in pgcache's repository is
// one. Each purge is one PURGE per batch of tags to every node, sent concurrently;
// transient failures (no connection, 5xx, 429) are retried with backoff.
package varnish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgcache/pgcache/internal/retry"
)

// Errors of the purger, matched with errors.Is.
var (
	// ErrBadTag: a tag is empty, too long, or holds a character other than ASCII
	// letters, digits, '_', '.' and '-' (Varnish's xkey splits tags at spaces and
	// commas). Nothing was sent.
	ErrBadTag = errors.New("varnish: bad tag")
	// ErrBadOptions: the Options given to NewPurger cannot work.
	ErrBadOptions = errors.New("varnish: bad options")
)

// Options configure a Purger. Zero values mean the defaults given.
type Options struct {
	// URLs are the Varnish nodes PURGE requests go to, one URL per node, such as
	// "http://varnish-1:80/". Required.
	URLs []string
	// Header is the request header carrying the tags, space-separated. Default
	// "xkey-purge", which deploy/varnish/pgcache.vcl reads; "xkey-softpurge" makes it
	// expire the objects instead (served stale within their stale-while-revalidate
	// window while refetched).
	Header string
	// MaxTagsPerRequest bounds the tags of one PURGE request. Default 100.
	MaxTagsPerRequest int
	// MaxHeaderBytes bounds the length of the tag header's value in one request; more
	// tags go in more requests. Default 4096, half of Varnish's default
	// http_req_hdr_len (8k). A single tag longer than this is an ErrBadTag.
	MaxHeaderBytes int
	// HTTPClient sends the requests. Default: a client of the purger's own that does
	// not follow redirects.
	HTTPClient *http.Client
	// Timeout bounds one request (one attempt). Default 10s.
	Timeout time.Duration
	// Attempts is how many times one request is tried before its node is reported as
	// failed. Default 5; waits between attempts double from 100ms to 2s, jittered.
	Attempts int
	// Logger receives a warning for each failed attempt. Nil discards them.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Header == "" {
		o.Header = "xkey-purge"
	}
	if o.MaxTagsPerRequest <= 0 {
		o.MaxTagsPerRequest = 100
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 4096
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Backoff between attempts of one request.
const (
	minWait = 100 * time.Millisecond
	maxWait = 2 * time.Second
)

// Purger purges Varnish nodes by tag. It is safe for concurrent use; its zero value is
// not usable: make one with NewPurger.
type Purger struct {
	opts Options
}

// NewPurger returns a purger of the nodes in opts.URLs.
func NewPurger(opts Options) (*Purger, error) {
	if len(opts.URLs) == 0 {
		return nil, fmt.Errorf("%w: no URLs: give the URL of every Varnish node, such as http://varnish-1:80/", ErrBadOptions)
	}
	opts.URLs = append([]string(nil), opts.URLs...)
	for _, raw := range opts.URLs {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: URL %q: want http://host:port/ of a Varnish node", ErrBadOptions, raw)
		}
	}
	if opts.Header != "" && !validHeaderName(opts.Header) {
		return nil, fmt.Errorf("%w: Header %q is not an HTTP header name", ErrBadOptions, opts.Header)
	}
	opts.setDefaults()
	return &Purger{opts: opts}, nil
}

// NodeError is the failure of one node: the URL, and the last attempt's error. Status
// is the HTTP status of the last answer, 0 when there was none (no connection, timeout).
type NodeError struct {
	URL    string
	Status int
	// Unsent is how many of the purge's tags were not confirmed purged at this node.
	Unsent int
	Err    error
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("varnish: purge at %s failed, %d tags not purged there: %v", e.URL, e.Unsent, e.Err)
}

func (e *NodeError) Unwrap() error { return e.Err }

// Purge makes every node drop the objects tagged with any of tags. It returns when every
// node has answered every batch or failed; the error joins a *NodeError per failed node
// (the others are purged). A tag that Varnish cannot read as one is an ErrBadTag, and
// then nothing is sent. Purging no tags sends nothing.
func (p *Purger) Purge(ctx context.Context, tags []string) error {
	batches, err := p.batches(tags)
	if err != nil || len(batches) == 0 {
		return err
	}
	errs := make([]error, len(p.opts.URLs))
	var wg sync.WaitGroup
	for i, u := range p.opts.URLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.purgeNode(ctx, u, batches)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// batches checks tags, drops repeats and groups them into header values within the
// bounds of the options.
func (p *Purger) batches(tags []string) ([]batch, error) {
	for i, tag := range tags {
		if err := p.checkTag(tag); err != nil {
			return nil, fmt.Errorf("%w %q (tag %d of %d): %v; nothing was purged", ErrBadTag, tag, i+1, len(tags), err)
		}
	}
	seen := make(map[string]struct{}, len(tags))
	var out []batch
	var cur strings.Builder
	n := 0
	flush := func() {
		if n > 0 {
			out = append(out, batch{header: cur.String(), tags: n})
			cur.Reset()
			n = 0
		}
	}
	for _, tag := range tags {
		if _, ok := seen[tag]; ok {
			continue
		}
		seen[tag] = struct{}{}
		if n == p.opts.MaxTagsPerRequest || (n > 0 && cur.Len()+1+len(tag) > p.opts.MaxHeaderBytes) {
			flush()
		}
		if n > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(tag)
		n++
	}
	flush()
	return out, nil
}

// checkTag says what is wrong with tag, if anything.
func (p *Purger) checkTag(tag string) error {
	if tag == "" {
		return errors.New("a tag is never empty")
	}
	if len(tag) > p.opts.MaxHeaderBytes {
		return fmt.Errorf("it is %d bytes long, more than MaxHeaderBytes (%d)", len(tag), p.opts.MaxHeaderBytes)
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; !tagByte(c) {
			return fmt.Errorf("byte %d is %q; a tag holds only ASCII letters, digits, '_', '.' and '-' (Varnish splits tags at spaces and commas)", i, c)
		}
	}
	return nil
}

func tagByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-'
}

// validHeaderName reports whether name is an HTTP token.
func validHeaderName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !tagByte(c) && !strings.ContainsRune("!#$%&'*+^`|~", rune(c)) {
			return false
		}
	}
	return name != ""
}

type batch struct {
	header string
	tags   int
}

// purgeNode sends the batches to one node in turn, stopping at the first that fails.
func (p *Purger) purgeNode(ctx context.Context, u string, batches []batch) error {
	for i, b := range batches {
		status, err := p.send(ctx, u, b)
		if err != nil {
			unsent := 0
			for _, rest := range batches[i:] {
				unsent += rest.tags
			}
			return &NodeError{URL: u, Status: status, Unsent: unsent, Err: err}
		}
	}
	return nil
}

// send sends one batch to one node, with retries. It returns the last answer's status.
func (p *Purger) send(ctx context.Context, u string, b batch) (int, error) {
	wait := retry.Backoff(minWait, maxWait)
	for attempt := 1; ; attempt++ {
		status, err := p.attempt(ctx, u, b)
		if err == nil {
			return status, nil
		}
		var perm *permanentError
		if errors.As(err, &perm) || ctx.Err() != nil || attempt == p.opts.Attempts {
			if attempt > 1 {
				err = fmt.Errorf("attempt %d of %d: %w", attempt, p.opts.Attempts, err)
			}
			return status, err
		}
		p.opts.Logger.Warn("varnish: purge failed, retrying", slog.String("url", u),
			slog.Int("attempt", attempt), slog.Int("status", status), slog.Any("error", err))
		if werr := retry.Wait(ctx, wait); werr != nil {
			return status, fmt.Errorf("%w (gave up waiting to retry: %w)", err, werr)
		}
	}
}

// permanentError is an answer that retrying cannot change: a 4xx other than 429, a 3xx.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// attempt sends one PURGE request.
func (p *Purger) attempt(ctx context.Context, u string, b batch) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "PURGE", u, nil)
	if err != nil {
		return 0, &permanentError{err}
	}
	req.Header.Set(p.opts.Header, b.header)
	resp, err := p.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch s := resp.StatusCode; {
	case 200 <= s && s < 300:
		return s, nil
	case s == http.StatusTooManyRequests || s >= 500:
		return s, fmt.Errorf("HTTP %s: %s", resp.Status, trim(body))
	default:
		hint := ""
		switch s {
		case http.StatusForbidden:
			hint = " (is this host in the VCL's purgers ACL?)"
		case http.StatusMethodNotAllowed, http.StatusBadRequest:
			hint = " (does the VCL handle PURGE with this header? see deploy/varnish/pgcache.vcl)"
		}
		return s, &permanentError{fmt.Errorf("HTTP %s%s: %s", resp.Status, hint, trim(body))}
	}
}

func trim(body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" {
		return "(empty body)"
	}
	return strconv.Quote(s)
}
