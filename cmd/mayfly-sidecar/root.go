package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayflyhq/mayfly/sdk/sidecar"
)

// exitError carries a child's exit code out of `exec`.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("child exited with code %d", e.code) }

func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRoot(os.Stdout, os.Stderr, args...).ExecuteContext(ctx)
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.code
	}
	fmt.Fprintln(os.Stderr, "mayfly-sidecar:", err)
	return 1
}

// globalFlags are shared by every subcommand.
type globalFlags struct {
	config    string
	logLevel  string
	logFormat string
}

func (g *globalFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&g.config, "config", "", "the sidecar's YAML configuration file (required)")
	cmd.Flags().StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&g.logFormat, "log-format", "text", "text or json (logs go to standard error)")
}

// load reads the configuration and builds the sidecar.
func (g *globalFlags) load(stderr io.Writer) (*sidecar.Sidecar, error) {
	if g.config == "" {
		return nil, errors.New("--config is required (see examples/sidecar/ for an example)")
	}
	log, err := newLogger(stderr, g.logLevel, g.logFormat)
	if err != nil {
		return nil, err
	}
	cfg, err := sidecar.LoadConfig(g.config)
	if err != nil {
		return nil, err
	}
	return sidecar.New(cfg, sidecar.WithLogger(log))
}

func newRoot(stdout, stderr io.Writer, args ...string) *cobra.Command {
	root := &cobra.Command{
		Use:           "mayfly-sidecar",
		Short:         "Keeps a workload's Mayfly credentials valid and hands them over",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRun(stderr), newExec(stderr), newCheck(stdout), newGet(stdout))
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	return root
}

func newRun(stderr io.Writer) *cobra.Command {
	var g globalFlags
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Keep the credentials in files and on the socket until SIGTERM, then revoke them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, err := g.load(stderr)
			if err != nil {
				return err
			}
			return sc.Run(cmd.Context())
		},
	}
	g.register(cmd)
	return cmd
}

func newExec(stderr io.Writer) *cobra.Command {
	var g globalFlags
	cmd := &cobra.Command{
		Use:   "exec --config FILE -- CMD [ARGS...]",
		Short: "Run CMD with the credentials in its environment; signal or restart it when they rotate",
		Long: "Run CMD with the credentials in its environment (MAYFLY_TOKEN, ...), and send it the\n" +
			"configured exec.signal, or restart it (exec.restart_on_rotation), when a credential\n" +
			"rotates. mayfly-sidecar exits with CMD's exit code, after revoking the leases.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, argv []string) error {
			sc, err := g.load(stderr)
			if err != nil {
				return err
			}
			code, err := sc.Exec(cmd.Context(), argv)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	g.register(cmd)
	return cmd
}

func newCheck(stdout io.Writer) *cobra.Command {
	var g globalFlags
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Check the configuration file without contacting the broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := g.load(io.Discard); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "configuration ok")
			return nil
		},
	}
	g.register(cmd)
	return cmd
}

func newGet(stdout io.Writer) *cobra.Command {
	var socket, tmpl, prefix string
	cmd := &cobra.Command{
		Use:   "get --socket PATH ENTITLEMENT",
		Short: "Print a credential from a running sidecar's socket",
		Long: "Print the current credential of ENTITLEMENT from the sidecar serving PATH, as\n" +
			"--template env (default; eval-able: eval \"$(mayfly-sidecar get ...)\"), json, raw,\n" +
			"or a Go text/template.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if socket == "" {
				return errors.New("--socket is required")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			cred, err := sidecar.Fetch(ctx, socket, args[0])
			if err != nil {
				return err
			}
			out, err := sidecar.Render(tmpl, prefix, cred)
			if err != nil {
				return err
			}
			_, err = stdout.Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "the sidecar's socket (socket.path in its config)")
	cmd.Flags().StringVar(&tmpl, "template", sidecar.TemplateEnv, "env, json, raw, or a Go text/template")
	cmd.Flags().StringVar(&prefix, "env-prefix", "MAYFLY_", "prefix of the variable names with --template env")
	return cmd
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}
