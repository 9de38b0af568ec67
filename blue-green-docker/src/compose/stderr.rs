//! Reading compose's stderr for the lines that say what failed.

/// The lines of compose's stderr that say what failed, at most `at_most` of them.
///
/// Compose v2 starts with warnings (``the attribute `version` is obsolete``) and prints progress
/// lines (` api Pulling`) around the cause; v1 prints progress too. Warnings and progress are
/// left out when anything else was printed, and lines that name an error are preferred, so the
/// message shows the cause (a refused pull, a port in use) under both versions.
pub(super) fn what_failed(stderr: &str, at_most: usize) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let is_warning = |l: &str| {
        let t = l.trim_start();
        l.contains("level=warning") || t.starts_with("WARNING") || t.starts_with("WARN[")
    };
    let is_progress = |l: &str| {
        let words: Vec<&str> = l.split_whitespace().collect();
        let states = [
            "Pulling",
            "Pulled",
            "Creating",
            "Created",
            "Starting",
            "Started",
            "Waiting",
            "Healthy",
            "Stopping",
            "Stopped",
            "Removing",
            "Removed",
            "Recreate",
            "Recreated",
            "Running",
        ];
        (words.len() <= 4 && words.last().is_some_and(|w| states.contains(w)))
            || (l.ends_with("...") && !l.to_ascii_lowercase().contains("error"))
            || l.trim_start().starts_with("[+]")
    };
    let is_error = |l: &str| {
        let lower = l.to_ascii_lowercase();
        [
            "error",
            "failed",
            "denied",
            "refused",
            "not found",
            "no such",
            "invalid",
            "unknown",
            "cannot",
        ]
        .iter()
        .any(|w| lower.contains(w))
    };
    let pick = |keep: &dyn Fn(&str) -> bool| -> Vec<&str> {
        lines.iter().copied().filter(|l| keep(l)).collect()
    };
    let mut chosen = pick(&|l| !is_warning(l) && is_error(l));
    if chosen.is_empty() {
        chosen = pick(&|l| !is_warning(l) && !is_progress(l));
    }
    if chosen.is_empty() {
        chosen = lines;
    }
    chosen[chosen.len().saturating_sub(at_most)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::what_failed;

    #[test]
    fn compose_v2_warnings_and_progress_give_way_to_the_cause() {
        // What compose v2 (2.26) printed for an image on an unreachable registry.
        let stderr = r#"time="2026-11-29T11:06:54Z" level=warning msg="/tmp/x/docker-compose.yml: the attribute `version` is obsolete, it will be ignored, please remove it to avoid potential confusion"
 api Pulling 
 api Error Get "http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused
Error response from daemon: Get "http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused
"#;
        let cause = what_failed(stderr, 20);
        assert!(!cause.contains("obsolete"), "{cause}");
        assert!(!cause.contains("Pulling"), "{cause}");
        assert!(cause.starts_with(" api Error Get"), "{cause}");
        assert!(cause.ends_with("connection refused"), "{cause}");
    }

    #[test]
    fn compose_v1_progress_gives_way_to_the_cause() {
        let stderr = "Creating network \"bgx-blue_default\" with the default driver\nPulling api (127.0.0.1:9/bgx-missing:v1)...\nGet \"http://127.0.0.1:9/v2/\": dial tcp 127.0.0.1:9: connect: connection refused\n";
        assert_eq!(
            what_failed(stderr, 20),
            "Get \"http://127.0.0.1:9/v2/\": dial tcp 127.0.0.1:9: connect: connection refused"
        );
    }

    #[test]
    fn a_cause_without_error_words_is_kept_and_warnings_alone_are_shown() {
        let stderr = "WARNING: Found orphan containers\n api Pulling\nservice \"api\" has neither an image nor a build context specified\n";
        assert_eq!(
            what_failed(stderr, 20),
            "service \"api\" has neither an image nor a build context specified"
        );
        let only = "WARNING: something odd\n";
        assert_eq!(what_failed(only, 20), "WARNING: something odd");
        assert_eq!(what_failed("", 20), "");
    }

    #[test]
    fn at_most_the_last_lines_are_kept() {
        let stderr: String = (0..30).map(|i| format!("error {i}\n")).collect();
        let cause = what_failed(&stderr, 3);
        assert_eq!(cause, "error 27\nerror 28\nerror 29");
    }
}
