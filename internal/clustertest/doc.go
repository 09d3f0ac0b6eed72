// Package clustertest runs the read path and the invalidator against a real three-master
// Redis Cluster. It has only tests.
package clustertest
