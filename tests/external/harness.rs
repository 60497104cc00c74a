//! The harness of this binary: libtest's command line and output (through
//! libtest-mimic), and tests that need a program this machine may lack.
//!
//! A program is looked up in `PATH`, then in `/usr/bin` and `/usr/sbin`
//! (where Debian installs redis-server, outside some users' `PATH`). An
//! environment variable names its binary instead: `TOWER_ETAG_REDIS_SERVER`,
//! `TOWER_ETAG_CURL`. When that is set, the program is that file or missing;
//! `TOWER_ETAG_REDIS_SERVER=/nonexistent` shows what a machine without
//! redis-server reports.
//!
//! Where a program is missing, the tests that need it are reported as
//! ignored (as `#[ignore]` would: `--ignored` selects them), and the reason
//! is printed before the run. With `TOWER_ETAG_REQUIRE_SERVERS=1` (any value
//! but empty or `0`), as `.ci/run` sets it, they fail instead: a run that
//! could not start them does not pass.

use std::{future::Future, path::PathBuf};

use libtest_mimic::{Arguments, Trial};

/// The variable that turns a missing program into failed tests.
const REQUIRE: &str = "TOWER_ETAG_REQUIRE_SERVERS";

/// A program that some tests run.
pub(crate) struct Program {
    /// Its file name.
    name: &'static str,
    /// The environment variable that names its binary instead.
    variable: &'static str,
    /// Debian's package that installs it.
    package: &'static str,
}

#[cfg(feature = "redis")]
pub(crate) const REDIS_SERVER: Program = Program {
    name: "redis-server",
    variable: "TOWER_ETAG_REDIS_SERVER",
    package: "redis-server",
};

pub(crate) const CURL: Program = Program {
    name: "curl",
    variable: "TOWER_ETAG_CURL",
    package: "curl",
};

impl Program {
    /// Its binary, if this machine has one.
    pub(crate) fn find(&self) -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(self.variable) {
            let path = PathBuf::from(path);
            return path.is_file().then_some(path);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join(self.name))
            .find(|path| path.is_file())
    }

    /// Its binary. Panics when there is none: the suite starts a test that
    /// needs a missing program only when asked to with `--ignored`.
    pub(crate) fn path(&self) -> PathBuf {
        self.find().unwrap_or_else(|| panic!("{}", self.missing()))
    }

    /// Why it cannot be run.
    fn missing(&self) -> String {
        let (name, package) = (self.name, self.package);
        match std::env::var(self.variable) {
            Ok(path) => format!(
                "{name} not found at {}={path} (Debian: apt-get install {package})",
                self.variable
            ),
            Err(_) => format!("{name} not installed (Debian: apt-get install {package})"),
        }
    }
}

/// The value of `TOWER_ETAG_REQUIRE_SERVERS` when it is set to require the
/// programs.
fn required() -> Option<String> {
    std::env::var(REQUIRE)
        .ok()
        .filter(|value| !value.is_empty() && value != "0")
}

/// The tests of this binary.
#[derive(Default)]
pub(crate) struct Suite {
    /// Each trial, with the reason it is ignored if it is.
    trials: Vec<(Trial, Option<String>)>,
}

impl Suite {
    /// Adds `test`, named `name` in `module` (as `module_path!()` gives it),
    /// which needs the program `needs` if any.
    pub(crate) fn add(
        &mut self,
        module: &str,
        name: &str,
        needs: Option<&Program>,
        test: impl FnOnce() + Send + 'static,
    ) {
        // Named as libtest names a test: its path without the crate.
        let name = match module.split_once("::") {
            Some((_, module)) => format!("{module}::{name}"),
            None => name.to_owned(),
        };
        let Some(missing) = needs.filter(|p| p.find().is_none()).map(Program::missing) else {
            let trial = Trial::test(name, move || {
                test();
                Ok(())
            });
            self.trials.push((trial, None));
            return;
        };
        match required() {
            Some(value) => {
                let failure = format!("{missing}, and {REQUIRE}={value} requires it");
                let trial = Trial::test(name, move || Err(failure.into()));
                self.trials.push((trial, None));
            }
            None => {
                // Started all the same (`--ignored`), it fails saying why.
                let failure = missing.clone();
                let trial = Trial::test(name, move || Err(failure.into())).with_ignored_flag(true);
                self.trials.push((trial, Some(missing)));
            }
        }
    }

    /// Runs the tests that libtest's arguments select, and exits.
    pub(crate) fn run(self) -> ! {
        let args = Arguments::from_args();
        if !args.list {
            let mut reasons: Vec<(&str, usize)> = Vec::new();
            for (trial, reason) in &self.trials {
                let Some(reason) = reason else { continue };
                if args.is_filtered_out(trial) || !args.is_ignored(trial) {
                    continue;
                }
                match reasons.iter_mut().find(|(r, _)| r == reason) {
                    Some((_, count)) => *count += 1,
                    None => reasons.push((reason, 1)),
                }
            }
            for (reason, count) in reasons {
                let (tests, fail) = match count {
                    1 => ("test", "it fails"),
                    _ => ("tests", "they fail"),
                };
                eprintln!(
                    "note: {count} {tests} ignored: {reason}; with {REQUIRE}=1 {fail} instead"
                );
            }
        }
        let trials = self.trials.into_iter().map(|(trial, _)| trial).collect();
        libtest_mimic::run(&args, trials).exit()
    }
}

/// An async test run on a Tokio runtime of its own, as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` runs it.
pub(crate) fn on_tokio<T, F>(test: T) -> impl FnOnce() + Send + 'static
where
    T: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()>,
{
    move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build the test's runtime")
            .block_on(test())
    }
}

/// `add!(suite, needs, [names])` adds the test functions `names` of the
/// calling module to `suite`; `add!(suite, needs, async [names])` async ones,
/// each run by [`on_tokio`]. `needs` is the program they need, if any.
macro_rules! add {
    ($suite:expr, $needs:expr, async [$($test:ident),* $(,)?]) => {
        $(
            $suite.add(
                module_path!(),
                stringify!($test),
                $needs,
                $crate::harness::on_tokio($test),
            );
        )*
    };
    ($suite:expr, $needs:expr, [$($test:ident),* $(,)?]) => {
        $($suite.add(module_path!(), stringify!($test), $needs, $test);)*
    };
}

pub(crate) use add;
