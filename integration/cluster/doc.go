// Package cluster runs the read path, writes under write-through and invalidate
// (alone and in transactions), and the invalidator against a real three-master Redis
// Cluster. It has only tests.
package cluster
