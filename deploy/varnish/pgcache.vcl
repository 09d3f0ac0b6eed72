vcl 4.1;

# pgcache's Varnish configuration: Varnish caches the responses of an application that
# uses pgcache's HTTP response cache (package httpcache), which tags every response with
# the rows it was built from in the `xkey` header, and pgcache's worker purges by tag
# (package httpcache/varnish) when those rows change in Postgres.
#
#  * Cache lifetimes are the backend's: s-maxage, else max-age (Varnish's built-in rules,
#    which also leave alone requests with a Cookie or an Authorization header and
#    responses with Set-Cookie, no-store, no-cache or private).
#  * Stale-while-revalidate is the backend's too: a response with
#    `stale-while-revalidate=N` is served stale for N seconds after it expires while a
#    fresh copy is fetched in the background; a response without it is never served
#    stale (Varnish's default would be 10 seconds).
#  * The tags in the backend's `xkey` response header (space-separated) are kept with
#    the object by vmod xkey (Debian package varnish-modules) and not sent to clients.
#  * `PURGE` with an `xkey-purge: tag1 tag2` header, from an address in the purgers ACL,
#    removes every object carrying any of those tags and answers 200 with the count in
#    the `xkey-purged` response header. `xkey-softpurge` instead expires them: they are
#    then served stale, within their stale-while-revalidate window, while refetched.
#
# To deploy: set the backend below to your application and the ACL to the addresses of
# the pgcache workers, then run e.g. `varnishd -f /etc/varnish/pgcache.vcl -a :80`.

import xkey;

backend default {
	# The application (its HTTP server, behind pgcache's httpcache middleware).
	.host = "127.0.0.1";
	.port = "8080";
	.connect_timeout = 5s;
	.first_byte_timeout = 60s;
}

# Who may purge: the hosts that run the pgcache worker.
acl purgers {
	"127.0.0.1";
	"::1";
}

sub vcl_recv {
	if (req.method == "PURGE") {
		if (client.ip !~ purgers) {
			return (synth(403, "Forbidden: this address is not in the purgers ACL"));
		}
		if (req.http.xkey-purge) {
			set req.http.xkey-purged = xkey.purge(req.http.xkey-purge);
		} elsif (req.http.xkey-softpurge) {
			set req.http.xkey-purged = xkey.softpurge(req.http.xkey-softpurge);
		} else {
			return (synth(400, "PURGE needs an xkey-purge (or xkey-softpurge) header listing tags"));
		}
		return (synth(200, "Purged " + req.http.xkey-purged + " objects"));
	}
	# Everything else: Varnish's built-in rules.
}

sub vcl_backend_response {
	# Varnish's default grace would serve any expired object stale for 10 seconds; serve
	# stale only what the backend allows (Varnish has set beresp.grace from
	# stale-while-revalidate already).
	if (beresp.http.Cache-Control !~ "(?i)stale-while-revalidate") {
		set beresp.grace = 0s;
	}
}

sub vcl_deliver {
	# The tags are the worker's business, not the clients'.
	unset resp.http.xkey;
	if (obj.hits > 0) {
		set resp.http.X-Cache = "HIT";
	} else {
		set resp.http.X-Cache = "MISS";
	}
}

sub vcl_synth {
	if (req.method == "PURGE") {
		set resp.http.Content-Type = "text/plain; charset=utf-8";
		if (req.http.xkey-purged) {
			set resp.http.xkey-purged = req.http.xkey-purged;
		}
		set resp.body = resp.reason + {"
"};
		return (deliver);
	}
}
