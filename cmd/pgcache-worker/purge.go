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
// (see package httpcache): -purge-varnish and -purge-timeout.
type purgeConfig struct {
	varnish []string
	timeout time.Duration
}

// purgeFlags defines -purge-varnish and -purge-timeout; finish reads them once the
// flags are parsed.
func purgeFlags(str stringFlag) (finish func(*purgeConfig) error) {
	var list, timeout string
	str(&list, "purge-varnish", "PGCACHE_PURGE_VARNISH", "",
		"Varnish nodes to purge by tag (xkey-purge) when rows change, comma-separated URLs such as http://varnish-1:80,http://varnish-2:80 (see deploy/varnish/pgcache.vcl)")
	str(&timeout, "purge-timeout", "PGCACHE_PURGE_TIMEOUT", "2s",
		"how long purging may hold a transaction's acknowledgement; a purge that fails or takes longer is counted and logged, and Varnish keeps the object until its s-maxage")
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
