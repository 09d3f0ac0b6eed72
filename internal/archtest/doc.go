// Package archtest checks that imports follow the one-way ladder of
// docs/ARCHITECTURE.md, and that the library's module requires only what the library
// uses. It has only tests.
package archtest
