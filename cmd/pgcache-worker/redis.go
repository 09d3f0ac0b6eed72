package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisConfig is how the worker reaches Redis, from -redis and the flags and
// environment variables beside it.
type redisConfig struct {
	// target is -redis: "host:port", several comma-separated (a Cluster, or the
	// sentinels with sentinelMaster), or a redis:// or rediss:// URL as go-redis parses
	// it (user, password, database, TLS; more addresses as ?addr=host:port, a
	// Cluster; ?master_name=name, Sentinel).
	target string
	// password and username override the URL's ($PGCACHE_REDIS_PASSWORD, …_FILE),
	// so that the secret need not be on the command line.
	username, password string
	// sentinelMaster names the master that the sentinels at target watch.
	sentinelMaster string
	// sentinelPassword authenticates to the sentinels themselves, when they ask.
	sentinelPassword string
	// caFile, certFile, keyFile: TLS trust (a private CA, PEM) and a client
	// certificate, for servers that require one (tls-auth-clients yes).
	caFile, certFile, keyFile string
}

// options turns the configuration into go-redis options: one of single, cluster and
// sentinel is set, unless err is.
func (c redisConfig) options() (single *redis.Options, cluster *redis.ClusterOptions, sentinel *redis.FailoverOptions, err error) {
	if c.target == "" {
		return nil, nil, nil, errors.New("-redis (or $PGCACHE_REDIS_ADDR) is required")
	}
	if (c.certFile == "") != (c.keyFile == "") {
		return nil, nil, nil, errors.New("-redis-cert-file and -redis-key-file go together: give both, or neither")
	}
	isURL := strings.Contains(c.target, "://")
	var q url.Values
	if isURL {
		u, err := url.Parse(c.target)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("-redis: %v (want host:port, or redis://user:password@host:port/db, or rediss:// for TLS)", redactURLError(err))
		}
		if u.Scheme != "redis" && u.Scheme != "rediss" {
			return nil, nil, nil, fmt.Errorf("-redis: scheme %q: use redis:// or rediss:// (TLS)", u.Scheme)
		}
		q = u.Query()
	}
	switch {
	case c.sentinelMaster != "" || q.Has("master_name"):
		sentinel, err = c.sentinelOptions(isURL)
	case isURL && q.Has("addr") || !isURL && strings.Contains(c.target, ","):
		cluster, err = c.clusterOptions(isURL)
	default:
		single, err = c.singleOptions(isURL)
	}
	return single, cluster, sentinel, err
}

func (c redisConfig) singleOptions(isURL bool) (*redis.Options, error) {
	o := &redis.Options{Addr: strings.TrimSpace(c.target)}
	if isURL {
		var err error
		if o, err = redis.ParseURL(c.target); err != nil {
			return nil, fmt.Errorf("-redis: %v", redactURLError(err))
		}
	}
	o.ContextTimeoutEnabled = true
	c.credentials(&o.Username, &o.Password)
	tlsConfig, err := c.tls(o.TLSConfig, hostOf(o.Addr))
	o.TLSConfig = tlsConfig
	return o, err
}

func (c redisConfig) clusterOptions(isURL bool) (*redis.ClusterOptions, error) {
	o := &redis.ClusterOptions{}
	if isURL {
		var err error
		if o, err = redis.ParseClusterURL(c.target); err != nil {
			return nil, fmt.Errorf("-redis: %v", redactURLError(err))
		}
	} else {
		for _, a := range strings.Split(c.target, ",") {
			if a = strings.TrimSpace(a); a != "" {
				o.Addrs = append(o.Addrs, a)
			}
		}
	}
	o.ContextTimeoutEnabled = true
	c.credentials(&o.Username, &o.Password)
	tlsConfig, err := c.tls(o.TLSConfig, hostOf(o.Addrs[0]))
	o.TLSConfig = tlsConfig
	return o, err
}

// sentinelOptions: the addresses are the sentinels'. A URL's user and password are
// the master's (go-redis' ParseFailoverURL reads them as the sentinels'); the
// sentinels' own password comes from $PGCACHE_REDIS_SENTINEL_PASSWORD, since
// sentinels often have none.
func (c redisConfig) sentinelOptions(isURL bool) (*redis.FailoverOptions, error) {
	o := &redis.FailoverOptions{}
	if isURL {
		var err error
		if o, err = redis.ParseFailoverURL(c.target); err != nil {
			return nil, fmt.Errorf("-redis: %v", redactURLError(err))
		}
		o.Username, o.Password = o.SentinelUsername, o.SentinelPassword
		o.SentinelUsername, o.SentinelPassword = "", ""
	} else {
		for _, a := range strings.Split(c.target, ",") {
			if a = strings.TrimSpace(a); a != "" {
				o.SentinelAddrs = append(o.SentinelAddrs, a)
			}
		}
	}
	if c.sentinelMaster != "" {
		o.MasterName = c.sentinelMaster
	}
	if o.MasterName == "" {
		return nil, errors.New("-redis-sentinel-master is empty: name the master the sentinels watch")
	}
	o.SentinelPassword = c.sentinelPassword
	o.ContextTimeoutEnabled = true
	c.credentials(&o.Username, &o.Password)
	tlsConfig, err := c.tls(o.TLSConfig, "")
	o.TLSConfig = tlsConfig
	return o, err
}

// credentials applies the username and password given apart from the URL.
func (c redisConfig) credentials(username, password *string) {
	if c.username != "" {
		*username = c.username
	}
	if c.password != "" {
		*password = c.password
	}
}

// tls completes the TLS configuration a rediss:// URL asked for (base), with the CA
// and client certificate files. Those files without rediss:// are an error: they
// would be ignored, and the connection would go in clear.
func (c redisConfig) tls(base *tls.Config, host string) (*tls.Config, error) {
	files := c.caFile != "" || c.certFile != ""
	if base == nil {
		if files {
			return nil, errors.New("-redis-ca-file, -redis-cert-file and -redis-key-file need TLS: write the address as rediss://host:port")
		}
		return nil, nil
	}
	cfg := base.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("-redis-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-redis-ca-file %s holds no PEM certificate", c.caFile)
		}
		cfg.RootCAs = pool
	}
	if c.certFile != "" {
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("-redis-cert-file, -redis-key-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// client builds the Redis client the configuration describes.
func (c redisConfig) client() (redis.UniversalClient, error) {
	single, cluster, sentinel, err := c.options()
	switch {
	case err != nil:
		return nil, err
	case cluster != nil:
		return redis.NewClusterClient(cluster), nil
	case sentinel != nil:
		return redis.NewFailoverClient(sentinel), nil
	}
	return redis.NewClient(single), nil
}

// display returns the target for logs, without a password.
func (c redisConfig) display() string {
	u, err := url.Parse(c.target)
	if err != nil || !strings.Contains(c.target, "://") {
		return c.target
	}
	return u.Redacted()
}

func hostOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}

// redactURLError keeps a password in a URL out of an error message: url.Error
// quotes the whole URL.
func redactURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if u, perr := url.Parse(uerr.URL); perr == nil {
			uerr.URL = u.Redacted()
		} else {
			uerr.URL = "(the -redis URL)"
		}
		return uerr
	}
	return err
}
