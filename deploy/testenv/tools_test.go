package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestToolCacheDir(t *testing.T) {
	t.Setenv("MAYFLY_TOOLS_CACHE", "/x/tools")
	t.Setenv("XDG_CACHE_HOME", "/x/xdg")
	if d, err := toolCacheDir(); err != nil || d != "/x/tools" {
		t.Fatalf("with MAYFLY_TOOLS_CACHE: %q, %v", d, err)
	}
	t.Setenv("MAYFLY_TOOLS_CACHE", "")
	if d, err := toolCacheDir(); err != nil || d != "/x/xdg/mayfly-tools" {
		t.Fatalf("with XDG_CACHE_HOME: %q, %v", d, err)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/x/home")
	if d, err := toolCacheDir(); err != nil || d != "/x/home/.cache/mayfly-tools" {
		t.Fatalf("with HOME only: %q, %v", d, err)
	}
}

func TestToolModVersion(t *testing.T) {
	root, err := toolRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	v, err := toolModVersion(filepath.Join(root, toolVaultModDir, "go.mod"), toolVaultModule)
	if err != nil || v != "v1.21.0" {
		t.Fatalf("Vault version pinned by %s = %q, %v; want v1.21.0 (v1.21.4 does not build)", toolVaultModDir, v, err)
	}

	gomod := filepath.Join(t.TempDir(), "go.mod")
	if err := os.WriteFile(gomod, []byte("module x\n\nrequire (\n\tgithub.com/other v1.0.0\n\tgithub.com/hashicorp/vault v1.2.3 // indirect\n)\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := toolModVersion(gomod, toolVaultModule); err != nil || v != "v1.2.3" {
		t.Fatalf("toolModVersion = %q, %v; want v1.2.3", v, err)
	}
	if _, err := toolModVersion(gomod, "github.com/missing"); err == nil {
		t.Fatal("toolModVersion of a module not required: no error")
	}
}
