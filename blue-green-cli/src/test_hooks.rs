//! Test-only hooks, compiled in only with the `test-hooks` feature, which only this package's
//! own tests turn on (through its dev-dependency on itself): a release binary holds none of it,
//! not even the name of its environment variable.
//!
//! Without the feature, [`PauseHook`] is a type with no value, so the observers' calls to it
//! compile away.

#[cfg(feature = "test-hooks")]
pub use pause::{pause_marker, resume_marker, PAUSE_ENV};

#[cfg(feature = "test-hooks")]
mod pause {
    use std::path::PathBuf;
    use std::time::Duration;

    use blue_green_core::Event;

    /// Environment variable of the pause hook: the name of the step to park at.
    pub const PAUSE_ENV: &str = "BLUE_GREEN_TEST_PAUSE_AT";

    /// The file the hook creates (holding the pid) once it is parked at `step`.
    pub fn pause_marker(state_dir: &std::path::Path, step: &str) -> PathBuf {
        state_dir.join(format!("paused-at-{step}"))
    }

    /// The file a test creates to let a command parked at `step` go on (the hook removes it).
    pub fn resume_marker(state_dir: &std::path::Path, step: &str) -> PathBuf {
        state_dir.join(format!("resume-at-{step}"))
    }

    /// When `BLUE_GREEN_TEST_PAUSE_AT=<step>` is set, the observer creates
    /// `<state_dir>/paused-at-<step>` when that step starts and then blocks until the test
    /// creates `<state_dir>/resume-at-<step>`, so that a fault-injection test can kill the
    /// process at exactly that point, or break something around it and let it go on.
    #[derive(Debug, Clone)]
    pub struct PauseHook {
        step: String,
        state_dir: PathBuf,
    }

    impl PauseHook {
        /// The hook from the environment, if the variable is set.
        pub fn from_env(state_dir: PathBuf) -> Option<Self> {
            let step = std::env::var(PAUSE_ENV).ok()?.trim().to_string();
            (!step.is_empty()).then_some(PauseHook { step, state_dir })
        }

        /// Parks the calling thread when `event` starts the hook's step, until the resume file
        /// appears.
        pub fn check(&self, event: &Event) {
            let Event::StepStarted { step, .. } = event else {
                return;
            };
            if step.as_str() != self.step {
                return;
            }
            let marker = pause_marker(&self.state_dir, &self.step);
            if let Err(e) = std::fs::create_dir_all(&self.state_dir)
                .and_then(|()| std::fs::write(&marker, std::process::id().to_string()))
            {
                eprintln!("{PAUSE_ENV}: cannot write {}: {e}", marker.display());
            }
            // Deliberately blocks this worker thread: the test kills the process here, or lets
            // it go on.
            let resume = resume_marker(&self.state_dir, &self.step);
            while !resume.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_file(&resume);
            let _ = std::fs::remove_file(&marker);
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
mod pause {
    use std::path::PathBuf;

    use blue_green_core::Event;

    /// Without the `test-hooks` feature there is no pause hook: this type has no value.
    #[derive(Debug, Clone)]
    pub enum PauseHook {}

    impl PauseHook {
        /// Always `None`: this build has no test hooks.
        pub fn from_env(_state_dir: PathBuf) -> Option<Self> {
            None
        }

        /// Never called: there is no value to call it on.
        pub fn check(&self, _event: &Event) {
            match *self {}
        }
    }
}

pub use pause::PauseHook;
