// Package archtest checks that imports follow the one-way ladder of
// docs/ARCHITECTURE.md. It has only tests.
package archtest
