//! The command line: commands, flags and their help.

use std::path::PathBuf;

use blue_green_core::{Color, ShiftSteps};
use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit codes:
  0    done
  1    the command failed; nothing that was serving changed
  2    bad config or usage
  3    another command holds the app's deploy lock
  4    the environment is unreachable (Docker, compose, nginx, state dir)
  5    the command failed and the previous state could not be fully restored (the message says what is left)
  130  cancelled with Ctrl-C; the deploy was rolled back

Examples:
  blue-green validate                       check blue-green.toml, Docker and nginx; change nothing
  blue-green deploy --release v1.4.2        start v1.4.2 in the idle color and switch to it
  blue-green deploy --image web:1.4.2       run that image (release id: its tag)
  blue-green status                         which color is live, every instance, what is left over
  blue-green repair                         repair what an interrupted command left
  blue-green rollback                       route back to the previous color
  blue-green -c deploy/prod.toml history --json

Docs: README.md, docs/guide.md, docs/configuration.md";

/// Zero-downtime blue/green deploys of a web service behind blue-green's own proxy (or nginx),
/// from one TOML file.
///
/// blue-green starts the new release in the idle color, probes it directly until it is ready,
/// switches the router to it, checks the switch through it, lets the old color's requests finish,
/// and only then stops the old color. Any failure before the switch leaves what was serving
/// untouched.
#[derive(Debug, Parser)]
#[command(name = "blue-green", version, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// The config file. Relative paths in it are relative to its directory.
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        default_value = "blue-green.toml",
        env = "BLUE_GREEN_CONFIG"
    )]
    pub config: PathBuf,

    /// Write machine-readable output on stdout: one JSON object per line (events, then a result).
    #[arg(long, global = true)]
    pub json: bool,

    /// Show debug logs on stderr, and each failed step's own error.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Show only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a release to the idle color and switch live traffic to it.
    ///
    /// Steps: take the lock, reconcile, clear the idle slot, start, wait until ready (probing the
    /// new instance directly), switch the router, verify, drain the old color, stop it, record.
    /// A failure before the switch removes what was started and leaves the live color serving.
    /// Ctrl-C rolls back and exits with 130.
    #[command(after_long_help = "\
Examples:
  blue-green deploy --release v1.4.2
  blue-green deploy --image registry.local/web:1.4.2      # release id: the tag, 1.4.2
  blue-green deploy --release \"$(git rev-parse --short HEAD)\" --json > deploy.ndjson
  blue-green deploy --release v1.4.3 --no-switch         # stage it; then `promote` or `abort`
  blue-green deploy --release v1.4.4 --steps 10,50,100   # 10%, then 50%, each watched, then all")]
    Deploy(DeployArgs),

    /// Switch live traffic to the staged color (`deploy --no-switch`).
    ///
    /// Re-checks its readiness, switches the router (step by step with `[switch] steps` or
    /// `--steps`), verifies, runs the post_switch hook, drains and retires the old color like a
    /// deploy, records, runs post_deploy. A failure leaves the live color serving and the
    /// staged one staged. With nothing staged it changes nothing and exits 0 (safe to run
    /// twice).
    Promote {
        /// Shift traffic to the staged color step by step, as `deploy --steps` does.
        #[arg(long, value_name = "PERCENTS", value_parser = parse_steps)]
        steps: Option<ShiftSteps>,
    },

    /// Stop and remove the staged color (`deploy --no-switch`); the router is not touched.
    ///
    /// With nothing staged it changes nothing and exits 0 (safe to run twice).
    Abort,

    /// Show the live color, its release, every instance and its state, and the router target.
    ///
    /// The router is the truth for which color is live. Status only reads: it changes nothing
    /// (a dashboard may poll it), and lists what an interrupted command left over; `blue-green
    /// repair` repairs that.
    Status,

    /// Repair what an interrupted command left (`status` lists it).
    ///
    /// Finishes an interrupted deploy, rollback or switch whose switch happened (records its
    /// color as live), undoes one whose switch did not (removes what a deploy started, stops
    /// what a rollback started), finishes an interrupted down, and records the live color the
    /// router points at. Takes the deploy lock (exit 3 while another command holds it); exits 5
    /// naming what is left when a repair fails. The next deploy, rollback, switch or down
    /// repairs first too.
    Repair,

    /// Route back to the previous color, starting it again if it was stopped or removed.
    Rollback,

    /// Route live traffic to a color that is running and passes readiness.
    Switch {
        /// The color to route to.
        #[arg(value_enum)]
        color: ColorArg,
    },

    /// Stop and remove a color (by default the idle one). Refuses the live color without --force.
    #[command(after_long_help = "\
Examples:
  blue-green down              remove the idle color (frees its memory; rollback then starts it afresh)
  blue-green down green        remove green, if it is not live
  blue-green down blue --force remove blue even if it is live: the app stops serving")]
    Down {
        /// The color to take down; default: the idle one.
        #[arg(value_enum)]
        color: Option<ColorArg>,
        /// Also take down the live color.
        #[arg(long)]
        force: bool,
    },

    /// Show past deploys, rollbacks and switches with their outcome and step timings.
    History {
        /// Show only the last N entries.
        #[arg(short = 'n', long, value_name = "N")]
        limit: Option<usize>,
    },

    /// Check the config file and the environment (Docker, compose, files, nginx -t); change nothing.
    ///
    /// Exits 0 when everything is usable, 2 when the config is wrong, 4 when the environment is
    /// unreachable.
    Validate {
        /// Check only the config file (syntax, keys, values, files it names), not Docker or nginx.
        #[arg(long)]
        config_only: bool,
    },

    /// Run blue-green's own proxy, or drive a running one (status, pause, resume, maintenance).
    Proxy(crate::commands::proxy::ProxyArgs),
}

/// `deploy` flags.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The release id shown in status and history and passed to the app as BLUE_GREEN_RELEASE
    /// (and to compose files as ${BLUE_GREEN_RELEASE}). Default: the tag of --image if given,
    /// otherwise the current UTC time as YYYYMMDDTHHMMSSZ.
    #[arg(short, long, value_name = "VERSION")]
    pub release: Option<String>,

    /// The image to run. Runtime kind "docker": replaces runtime.image. Kind "compose": passed
    /// to compose as ${BLUE_GREEN_IMAGE}, which the compose files must use.
    #[arg(short, long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// Stage the release: start it in the idle color, wait until it is ready and run the
    /// pre_switch hook, then stop, leaving live traffic where it is. The staged color answers
    /// at its own endpoint; `promote` switches to it, `abort` removes it.
    #[arg(long)]
    pub no_switch: bool,

    /// Shift traffic to the new color step by step: the percentages of new requests it gets,
    /// each step watched for `[switch] step_wait` before the next, the last one 100 (the
    /// switch). Overrides `[switch] steps`. Needs a router that can split traffic. A failure
    /// or Ctrl-C during a step sends all traffic back to the old color.
    #[arg(
        long,
        value_name = "PERCENTS",
        value_parser = parse_steps,
        conflicts_with = "no_switch"
    )]
    pub steps: Option<ShiftSteps>,
}

/// `--steps 10,50,100`, checked by the type that owns the rule.
fn parse_steps(s: &str) -> Result<ShiftSteps, String> {
    s.parse::<ShiftSteps>().map_err(|e| e.message)
}

/// A color on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// The blue slot.
    Blue,
    /// The green slot.
    Green,
}

impl From<ColorArg> for Color {
    fn from(c: ColorArg) -> Color {
        match c {
            ColorArg::Blue => Color::Blue,
            ColorArg::Green => Color::Green,
        }
    }
}
