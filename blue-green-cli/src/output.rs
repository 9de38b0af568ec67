//! What a person or a program sees: progress on stderr ([`HumanObserver`]), NDJSON events on
//! stdout ([`JsonObserver`]), and the final result of each command.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blue_green_core::{Event, Observer, Step};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use blue_green_cli::test_hooks::PauseHook;

/// Text from outside (a container's log line, a probe's reason, the output of a command, a
/// release id or lock holder read from a file) made safe for a terminal, on one line: every
/// control character but tab is shown escaped (`\n`, `\r`, `\u{1b}`, `\u{9b}`), and so are the
/// Unicode controls that reorder text. It can then neither move the cursor, set the window
/// title or clear the screen, nor start a line that looks like one of ours. This is the one
/// sanitizer of the human output; `--json` output is left to serde, which escapes the same.
pub fn one_line(text: &str) -> Cow<'_, str> {
    sanitize(text, false)
}

/// [`one_line`] for text of several lines that we laid out: newlines are kept.
pub fn terminal_text(text: &str) -> Cow<'_, str> {
    sanitize(text, true)
}

fn sanitize(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t' && !(keep_newlines && c == '\n'))
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Progress for people, on stderr: each step with its time, probe attempts, warnings, and a
/// spinner while a step runs (only when stderr is a terminal).
pub struct HumanObserver {
    out: Mutex<Box<dyn Write + Send>>,
    quiet: bool,
    verbose: bool,
    steps: bool,
    terminal: bool,
    spinner: Mutex<Option<ProgressBar>>,
    repeats: Mutex<Option<Repeats>>,
    /// The step at work, for the probe lines: the watch after the switch shows only its
    /// failed probes (a healthy one every interval for minutes says nothing).
    step: Mutex<Option<Step>>,
    /// The color of the step at work, for the drain's line ("… still open to blue").
    step_color: Mutex<Option<blue_green_core::Color>>,
    pause: Option<PauseHook>,
}

/// Probe attempts that failed for the same reason as the one before, shown as one line.
struct Repeats {
    color: blue_green_core::Color,
    reason: String,
    first: u32,
    last: u32,
}

impl HumanObserver {
    /// An observer on stderr, with a spinner when stderr is a terminal. It prints unless
    /// `quiet`; with `steps` false, only warnings (for read-only commands such as `status`).
    pub fn new(quiet: bool, steps: bool, pause: Option<PauseHook>) -> Self {
        let mut observer = Self::with_writer(Box::new(std::io::stderr()), quiet, steps, pause);
        observer.terminal = std::io::stderr().is_terminal();
        observer
    }

    /// An observer writing to `out`, never with a spinner.
    fn with_writer(
        out: Box<dyn Write + Send>,
        quiet: bool,
        steps: bool,
        pause: Option<PauseHook>,
    ) -> Self {
        HumanObserver {
            out: Mutex::new(out),
            quiet,
            verbose: false,
            steps,
            terminal: false,
            spinner: Mutex::new(None),
            repeats: Mutex::new(None),
            step: Mutex::new(None),
            step_color: Mutex::new(None),
            pause,
        }
    }

    /// Prints the line for probe attempts folded into one, if any.
    fn flush_repeats(&self) {
        let pending = self
            .repeats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = pending {
            let range = match r.last - r.first {
                0 => None,
                1 => Some(format!("#{}", r.last)),
                _ => Some(format!("#{}-#{}", r.first + 1, r.last)),
            };
            if let Some(range) = range {
                self.line(&format!(
                    "       probe {} {range}: not ready, same reason as #{}",
                    r.color, r.first
                ));
            }
        }
    }

    fn set_spinner_message(&self, message: String) {
        let slot = self.spinner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pb) = slot.as_ref() {
            pb.set_message(message);
        }
    }

    /// Prints one line; what it shows from outside cannot break out of it.
    fn line(&self, text: &str) {
        let text = one_line(text);
        let text = text.as_ref();
        let spinner = self.spinner.lock().unwrap_or_else(|p| p.into_inner());
        match spinner.as_ref() {
            Some(pb) if !pb.is_hidden() => pb.println(text),
            _ => {
                let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(out, "{text}");
            }
        }
    }

    fn start_spinner(&self, message: String) {
        if !self.terminal {
            return;
        }
        let pb = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("  {spinner} {msg} {elapsed}") {
            pb.set_style(style);
        }
        pb.set_message(message);
        pb.enable_steady_tick(Duration::from_millis(100));
        let mut slot = self.spinner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.replace(pb) {
            old.finish_and_clear();
        }
    }

    fn stop_spinner(&self) {
        let mut slot = self.spinner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pb) = slot.take() {
            pb.finish_and_clear();
        }
    }
}

fn step_label(step: Step, color: Option<blue_green_core::Color>) -> String {
    match color {
        Some(c) => format!("{step} {c}"),
        None => step.to_string(),
    }
}

/// How many of a hook's last output lines the progress shows (`--verbose`: all of them).
const HOOK_LINES: usize = 10;

/// A hook's output as the progress shows it: its last lines, after a line that says how many
/// were left out (the JSON events and `--verbose` have them all).
fn folded(output: &str, verbose: bool) -> Vec<String> {
    let lines: Vec<&str> = output.lines().collect();
    let keep = if verbose { lines.len() } else { HOOK_LINES };
    let skipped = lines.len().saturating_sub(keep);
    let mut shown = Vec::with_capacity(keep + 1);
    if skipped > 0 {
        shown.push(format!(
            "... {skipped} earlier line{} (--verbose or --json shows them)",
            if skipped == 1 { "" } else { "s" }
        ));
    }
    shown.extend(lines[skipped..].iter().map(|l| l.to_string()));
    shown
}

/// Seconds with one decimal, for people.
pub fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl Observer for HumanObserver {
    fn on_event(&self, event: &Event) {
        if let Some(p) = &self.pause {
            p.check(event);
        }
        if self.quiet {
            return;
        }
        if !self.steps {
            if let Event::Warning { message } = event {
                self.line(&format!("warning: {message}"));
            }
            return;
        }
        match event {
            Event::CommandStarted {
                app,
                command,
                release,
            } => {
                let release = release
                    .as_ref()
                    .map(|r| format!(" release {r}"))
                    .unwrap_or_default();
                self.line(&format!("{command} {app}{release}"));
            }
            Event::StepStarted { step, color } => {
                *self.step.lock().unwrap_or_else(|p| p.into_inner()) = Some(*step);
                *self.step_color.lock().unwrap_or_else(|p| p.into_inner()) = *color;
                self.start_spinner(step_label(*step, *color));
            }
            Event::StepFinished {
                step,
                color,
                elapsed_ms,
            } => {
                self.flush_repeats();
                self.stop_spinner();
                self.line(&format!(
                    "  ok   {:<16} {:>7}",
                    step_label(*step, *color),
                    secs(*elapsed_ms)
                ));
            }
            Event::StepFailed {
                step,
                color,
                elapsed_ms,
                error,
            } => {
                // The reason is in the error printed at the end; here only where and when,
                // unless verbose (a failed restore step has an error of its own).
                self.flush_repeats();
                self.stop_spinner();
                let mut line = format!(
                    "  FAIL {:<16} {:>7}",
                    step_label(*step, *color),
                    secs(*elapsed_ms)
                );
                if self.verbose {
                    line.push_str(&format!("  {error}"));
                }
                self.line(&line);
            }
            Event::ProbeAttempt {
                color,
                attempt,
                healthy,
                reason,
                elapsed_ms,
            } => {
                let reason = reason.as_deref().unwrap_or("unhealthy");
                let step = self
                    .step
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or(Step::Ready);
                self.set_spinner_message(format!("{step} {color}: probe #{attempt}"));
                // A watch (after the switch, or at a step of a gradual shift) shows only what
                // goes wrong.
                if matches!(step, Step::Watch | Step::Shift) && *healthy && !self.verbose {
                    return;
                }
                if !*healthy {
                    let mut repeats = self.repeats.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(r) = repeats.as_mut() {
                        if r.color == *color && r.reason == reason {
                            r.last = *attempt;
                            return;
                        }
                    }
                }
                self.flush_repeats();
                let verdict = if *healthy {
                    "healthy".to_string()
                } else {
                    *self.repeats.lock().unwrap_or_else(|p| p.into_inner()) = Some(Repeats {
                        color: *color,
                        reason: reason.to_string(),
                        first: *attempt,
                        last: *attempt,
                    });
                    format!("not ready: {reason}")
                };
                self.line(&format!(
                    "       probe {color} #{attempt}: {verdict} ({elapsed_ms} ms)"
                ));
            }
            Event::Warning { message } => self.line(&format!("  warning: {message}")),
            Event::Routed { color, endpoint } => {
                self.line(&format!(
                    "  ->   live traffic now goes to {color} at {endpoint}"
                ));
            }
            Event::Shifted {
                color,
                percent,
                endpoint,
            } => {
                self.line(&format!(
                    "  ->   {percent}% of new requests now go to {color} at {endpoint}, the rest to the old color; watching"
                ));
            }
            Event::Previewed {
                color,
                address: Some(address),
            } => {
                // The router's own text: one line, no terminal escapes.
                self.line(&format!(
                    "  ->   preview of {color} at {}",
                    one_line(address)
                ));
            }
            Event::Previewed { address: None, .. } => {}
            // Only a router that counts in-flight requests says anything worth a line.
            Event::Drained {
                endpoint,
                elapsed_ms,
                left: Some(left),
                cut,
                ..
            } => {
                let what = match (left, cut) {
                    (0, _) => "nothing left in flight".to_string(),
                    (n, Some(c)) => format!("{n} still in flight, {c} closed by the router"),
                    (n, None) => format!("{n} still in flight"),
                };
                self.line(&format!(
                    "       drained {endpoint}: {what} after {}",
                    secs(*elapsed_ms)
                ));
            }
            // A router that counts only the connections still open (nginx): what the stop ends.
            Event::Drained {
                endpoint,
                left: None,
                open: Some(open),
                ..
            } => {
                let to = self
                    .step_color
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .map_or_else(|| endpoint.to_string(), |c| c.to_string());
                let what = if *open == 1 {
                    "connection"
                } else {
                    "connections"
                };
                self.line(&format!(
                    "       {open} long-lived {what} still open to {to} when it stopped"
                ));
            }
            Event::Drained { left: None, .. } => {}
            Event::HookFinished {
                hook,
                status,
                output,
                ..
            } => {
                self.stop_spinner();
                self.line(&format!("       {hook} hook {status}"));
                for line in folded(output, self.verbose) {
                    self.line(&format!("       | {line}"));
                }
            }
            Event::CommandFinished { .. } => {
                self.flush_repeats();
                self.stop_spinner();
            }
            // Events a later core may add print nothing here (the JSON output has them all).
            _ => {}
        }
    }
}

/// One JSON event per line on stdout.
pub struct JsonObserver {
    pause: Option<PauseHook>,
}

impl JsonObserver {
    /// An NDJSON observer.
    pub fn new(pause: Option<PauseHook>) -> Self {
        JsonObserver { pause }
    }
}

impl Observer for JsonObserver {
    fn on_event(&self, event: &Event) {
        if let Some(p) = &self.pause {
            p.check(event);
        }
        if let Ok(line) = serde_json::to_string(event) {
            print_json_line(&line);
        }
    }
}

fn print_json_line(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (a pipe whose reader left) must not fail the deploy.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// How the command's own output is written.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// NDJSON on stdout.
    pub json: bool,
    /// Only errors.
    pub quiet: bool,
    /// More detail: each failed step's error.
    pub verbose: bool,
}

impl Printer {
    /// The observer for a command that emits events; `steps` false shows only warnings.
    pub fn observer(&self, steps: bool, pause: Option<PauseHook>) -> Arc<dyn Observer> {
        if self.json {
            Arc::new(JsonObserver::new(pause))
        } else {
            let mut observer = HumanObserver::new(self.quiet, steps, pause);
            observer.verbose = self.verbose;
            Arc::new(observer)
        }
    }

    /// The final line of a successful command: with `--json`, a result object on stdout built
    /// from `fields`; otherwise `human` on `stdout` (a command's answer) or stderr (a summary).
    pub fn success(&self, command: &str, fields: Value, human: &str, to_stdout: bool) {
        if self.json {
            let mut result =
                json!({ "event": "result", "command": command, "ok": true, "exit_code": 0 });
            merge(&mut result, fields);
            print_json_line(&result.to_string());
        } else if to_stdout {
            print!("{}", terminal_text(human));
            let _ = std::io::stdout().flush();
        } else if !self.quiet {
            eprintln!("{}", terminal_text(human));
        }
    }

    /// The final output of a failed command: `message` in the JSON result, `human` and
    /// `human_detail` for people. Errors are shown even with `--quiet`.
    pub fn failure(
        &self,
        command: &str,
        code: i32,
        message: &str,
        human: &str,
        fields: Value,
        human_detail: &str,
    ) {
        if self.json {
            let mut result = json!({
                "event": "result", "command": command, "ok": false,
                "exit_code": code, "error": message,
            });
            merge(&mut result, fields);
            print_json_line(&result.to_string());
        }
        eprintln!("error: {}", terminal_text(human));
        if !human_detail.is_empty() {
            eprint!("{}", terminal_text(human_detail));
        }
    }
}

fn merge(into: &mut Value, fields: Value) {
    if let (Some(into), Value::Object(fields)) = (into.as_object_mut(), fields) {
        into.extend(fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blue_green_core::Color;

    #[test]
    fn secs_rounds_to_tenths() {
        assert_eq!(secs(0), "0.0s");
        assert_eq!(secs(1249), "1.2s");
        assert_eq!(secs(61_000), "61.0s");
    }

    #[test]
    fn hook_output_is_folded_to_its_last_lines() {
        let output: String = (1..=12).map(|n| format!("line {n}\n")).collect();
        let shown = folded(&output, false);
        assert_eq!(shown.len(), 11);
        assert_eq!(
            shown[0],
            "... 2 earlier lines (--verbose or --json shows them)"
        );
        assert_eq!(shown[1], "line 3");
        assert_eq!(shown[10], "line 12");
        assert_eq!(folded(&output, true).len(), 12);
        assert_eq!(folded("one\n", false), ["one"]);
        assert!(folded("", false).is_empty());
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn probe(attempt: u32, reason: Option<&str>) -> Event {
        Event::ProbeAttempt {
            color: Color::Green,
            attempt,
            healthy: reason.is_none(),
            reason: reason.map(str::to_string),
            elapsed_ms: 1,
        }
    }

    fn render(events: &[Event], quiet: bool, steps: bool) -> String {
        let out = Captured::default();
        let observer = HumanObserver::with_writer(Box::new(out.clone()), quiet, steps, None);
        for e in events {
            observer.on_event(e);
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn probe_attempts_with_the_same_reason_are_folded() {
        let refused = Some("connection refused");
        let events = [
            Event::StepStarted {
                step: Step::Ready,
                color: Some(Color::Green),
            },
            probe(1, refused),
            probe(2, refused),
            probe(3, refused),
            probe(4, Some("status 503")),
            probe(5, Some("status 503")),
            probe(6, None),
            Event::StepFinished {
                step: Step::Ready,
                color: Some(Color::Green),
                elapsed_ms: 2500,
            },
        ];
        let text = render(&events, false, true);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            [
                "probe green #1: not ready: connection refused (1 ms)",
                "probe green #2-#3: not ready, same reason as #1",
                "probe green #4: not ready: status 503 (1 ms)",
                "probe green #5: not ready, same reason as #4",
                "probe green #6: healthy (1 ms)",
                "ok   ready green         2.5s",
            ]
        );
    }

    #[test]
    fn the_drain_says_how_many_connections_were_still_open_to_the_old_color() {
        let endpoint = blue_green_core::Endpoint::new("127.0.0.1", 8081);
        let drained = |open| Event::Drained {
            endpoint: endpoint.clone(),
            elapsed_ms: 2000,
            left: None,
            cut: None,
            open,
        };
        let started = Event::StepStarted {
            step: Step::Drain,
            color: Some(Color::Blue),
        };
        let text = render(&[started.clone(), drained(Some(3))], false, true);
        assert_eq!(
            text.trim(),
            "3 long-lived connections still open to blue when it stopped"
        );
        let text = render(&[started, drained(Some(1))], false, true);
        assert_eq!(
            text.trim(),
            "1 long-lived connection still open to blue when it stopped"
        );
        // A router that counts nothing says nothing.
        assert_eq!(render(&[drained(None)], false, true), "");
    }

    #[test]
    fn a_shift_step_says_its_share_and_shows_only_failed_probes() {
        let green = Some(Color::Green);
        let events = [
            Event::StepStarted {
                step: Step::Shift,
                color: green,
            },
            Event::Shifted {
                color: Color::Green,
                percent: 10,
                endpoint: blue_green_core::Endpoint::new("127.0.0.1", 8082),
            },
            probe(1, None),
            probe(2, Some("status 503")),
            probe(3, None),
            Event::StepFinished {
                step: Step::Shift,
                color: green,
                elapsed_ms: 30_000,
            },
            Event::Previewed {
                color: Color::Green,
                address: Some("http://preview.example.com\u{1b}[2J".into()),
            },
        ];
        let text = render(&events, false, true);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0],
            "->   10% of new requests now go to green at 127.0.0.1:8082, the rest to the old color; watching"
        );
        assert_eq!(lines[1], "probe green #2: not ready: status 503 (1 ms)");
        assert_eq!(lines[2], "ok   shift green        30.0s");
        assert!(lines[3].starts_with("->   preview of green at http://preview.example.com"));
        assert!(!lines[3].chars().any(char::is_control), "{:?}", lines[3]);
    }

    #[test]
    fn quiet_prints_nothing_and_read_only_commands_only_warnings() {
        let events = [
            Event::StepStarted {
                step: Step::Lock,
                color: None,
            },
            Event::StepFinished {
                step: Step::Lock,
                color: None,
                elapsed_ms: 3,
            },
            Event::Warning {
                message: "repaired a leftover".into(),
            },
        ];
        assert_eq!(render(&events, true, true), "");
        assert_eq!(
            render(&events, false, false),
            "warning: repaired a leftover\n"
        );
        assert!(render(&events, false, true).contains("ok   lock"));
    }

    #[test]
    fn text_from_outside_cannot_escape_its_line() {
        let forged =
            "status 500\r\n  ok   deploy done\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}";
        let shown = one_line(forged);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(!shown.contains('\u{202e}'), "{shown:?}");
        assert_eq!(
            shown,
            "status 500\\r\\n  ok   deploy done\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{9b}31m\\u{202e}"
        );
        assert_eq!(one_line("tab\tkept"), "tab\tkept");
        assert!(matches!(one_line("plain"), Cow::Borrowed(_)));
        assert_eq!(terminal_text("a\nb\u{1b}[2J"), "a\nb\\u{1b}[2J");
    }

    #[test]
    fn a_probe_reason_from_a_container_is_shown_escaped() {
        let events = [probe(1, Some("exit 1: \u{1b}[2J\r  ok   deploy done\nok"))];
        let text = render(&events, false, true);
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(!text.trim_end().chars().any(char::is_control), "{text:?}");
    }

    #[test]
    fn merge_adds_fields() {
        let mut v = json!({"a": 1});
        merge(&mut v, json!({"b": 2}));
        assert_eq!(v, json!({"a": 1, "b": 2}));
    }
}
