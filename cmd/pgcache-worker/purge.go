package main

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pgcache/pgcache/httpcache/varnish"
	"github.com/pgcache/pgcache/invalidator"
)

// purgeConfig says which HTTP caches the worker purges by tag when it invalidates rows
// (see package httpcache): -purge-varnish, -purge-timeout and -repurge-after.
type purgeConfig struct {
	varnish []string
	timeout time.Duration
	// repurge is invalidator.Options.RepurgeAfter: negative for off.
	repurge time.Duration
}

// purgeFlags defines -purge-varnish, -purge-timeout and -repurge-after; finish reads
// them once the flags are parsed.
func purgeFlags(str stringFlag) (finish func(*purgeConfig) error) {
	var list, timeout, repurge string
	str(&list, "purge-varnish", "PGCACHE_PURGE_VARNISH", "",
		"Varnish nodes to purge by tag (xkey-purge) when rows change, comma-separated URLs such as http://varnish-1:80,http://varnish-2:80 (see deploy/varnish/pgcache.vcl)")
	str(&timeout, "purge-timeout", "PGCACHE_PURGE_TIMEOUT", "2s",
		"how long purging may hold a transaction's acknowledgement; a purge that fails or takes longer is kept in Redis (the prefix's purge stream) and retried until it succeeds")
	str(&repurge, "repurge-after", "PGCACHE_REPURGE_AFTER", "2s",
		"how long after a purge the same tags are purged again, to drop responses rendered from the old row that reached Varnish after the first purge; 0 turns the second purge off")
	return func(c *purgeConfig) error {
		for _, u := range strings.Split(list, ",") {
			if u = strings.TrimSpace(u); u != "" {
				c.varnish = append(c.varnish, u)
			}
		}
		d, err := time.ParseDuration(timeout)
		if err != nil || d <= 0 {
			return fmt.Errorf("-purge-timeout %q: want a positive duration such as 2s", timeout)
		}
		c.timeout = d
		r, err := time.ParseDuration(repurge)
		if err != nil || r < 0 {
			return fmt.Errorf("-repurge-after %q: want a duration such as 2s, or 0 for no second purge", repurge)
		}
		c.repurge = r
		if r == 0 {
			c.repurge = -1 // invalidator.Options: negative is off, 0 the default
		}
		if len(c.varnish) > 0 {
			if _, err := c.purger(nil); err != nil {
				return err
			}
		}
		return nil
	}
}

// purger returns the purger of c's Varnish nodes, nil when there are none.
func (c purgeConfig) purger(log *slog.Logger) (invalidator.Purger, error) {
	if len(c.varnish) == 0 {
		return nil, nil
	}
	p, err := varnish.NewPurger(varnish.Options{URLs: c.varnish, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("-purge-varnish (or $PGCACHE_PURGE_VARNISH): %w", err)
	}
	return p, nil
}
