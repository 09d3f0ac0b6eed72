package main

import (
	"fmt"
	"os"
	"strings"
)

// secrets reads the worker's environment variables. Each NAME may instead be given as
// NAME_FILE, the path of a file holding the value (Docker and Kubernetes secrets are
// mounted so); a trailing newline is dropped. The first failure is kept in err.
type secrets struct {
	getenv func(string) string
	err    error
}

func (s *secrets) get(name string) string {
	v, file := s.getenv(name), s.getenv(name+"_FILE")
	switch {
	case file == "":
		return v
	case v != "":
		s.fail(fmt.Errorf("$%s and $%s_FILE are both set: keep one", name, name))
		return ""
	}
	b, err := os.ReadFile(file)
	if err != nil {
		s.fail(fmt.Errorf("$%s_FILE: %w", name, err))
		return ""
	}
	return strings.TrimRight(string(b), "\r\n")
}

func (s *secrets) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}
