//! The set of container engines a deployment places sandboxes on.
//!
//! A [`SandboxRuntime`] is one engine. [`Engines`] holds every engine of the deployment by name,
//! with its bound (`max`), its OCI runtime's name, and whether it is up as this process last
//! saw it; the use cases hold it instead of a single runtime, find a session's engine by the
//! name its row records ([`Engines::engine_of`]) and place new sandboxes
//! ([`Engines::place`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sandkeeper_domain::{EngineName, SandboxSession, Timestamp};

use crate::{RuntimeError, SandboxRuntime};

/// What one engine of the set is made from.
pub struct EngineSpec {
    pub name: EngineName,
    pub runtime: Arc<dyn SandboxRuntime>,
    /// The most sandboxes running on it at once; `None` is unbounded.
    pub max: Option<u64>,
    /// The OCI runtime its sandboxes run under (e.g. `runsc`); `None` is the engine's default.
    pub runtime_name: Option<String>,
}

debug_fields!(EngineSpec { name, max, runtime_name });

/// One engine of the set.
pub struct Engine {
    name: EngineName,
    runtime: Arc<dyn SandboxRuntime>,
    max: Option<u64>,
    runtime_name: Option<String>,
    /// `None` while up; since when it is down, as this process saw it.
    down_since: Mutex<Option<Timestamp>>,
    /// Sandboxes placed here whose rows are not saved yet.
    pending: AtomicU64,
    /// Whether being down steers the work away from it: only in a set of several engines.
    steered: bool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.name)
            .field("max", &self.max)
            .field("runtime_name", &self.runtime_name)
            .field("down_since", &self.down_since())
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn name(&self) -> &EngineName {
        &self.name
    }

    /// The engine's runtime, whether it is up or not.
    pub fn runtime(&self) -> &Arc<dyn SandboxRuntime> {
        &self.runtime
    }

    pub fn max(&self) -> Option<u64> {
        self.max
    }

    pub fn runtime_name(&self) -> Option<&str> {
        self.runtime_name.as_deref()
    }

    /// Since when the engine is down, `None` while it is up.
    pub fn down_since(&self) -> Option<Timestamp> {
        *crate::inprocess::lock(&self.down_since)
    }

    /// Whether the engine answered when last asked.
    pub fn is_up(&self) -> bool {
        self.down_since().is_none()
    }

    /// Since when the engine is down, when that steers work away from it: in a set of several
    /// engines, its calls are not tried (they answer unavailable at once), new sandboxes go to
    /// the others, and its sandboxes are given up after the engine-loss grace. The one engine
    /// of a set of one is always tried, as if up: there is nowhere else to go.
    pub fn avoided_since(&self) -> Option<Timestamp> {
        self.down_since().filter(|_| self.steered)
    }

    pub fn is_avoided(&self) -> bool {
        self.avoided_since().is_some()
    }

    /// The engine's runtime unless it is avoided ([`Self::avoided_since`]); an avoided engine
    /// is [`RuntimeError::Unavailable`] at once, without a call that would wait on it.
    pub fn runtime_if_up(&self) -> Result<&Arc<dyn SandboxRuntime>, RuntimeError> {
        match self.avoided_since() {
            None => Ok(&self.runtime),
            Some(since) => Err(RuntimeError::Unavailable(
                format!("engine `{}` is down (it stopped answering at {since})", self.name).into(),
            )),
        }
    }

    /// Records that the engine did not answer at `now`. Returns whether it was up until then.
    pub fn mark_down(&self, now: Timestamp) -> bool {
        let mut down = crate::inprocess::lock(&self.down_since);
        let was_up = down.is_none();
        if was_up {
            *down = Some(now);
        }
        was_up
    }

    /// Records that the engine answered. Returns whether it was down until then.
    pub fn mark_up(&self) -> bool {
        crate::inprocess::lock(&self.down_since).take().is_some()
    }
}

/// Every engine of the deployment, shared (a clone is the same set).
#[derive(Clone)]
pub struct Engines {
    engines: Arc<[Engine]>,
}

impl fmt::Debug for Engines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.engines.iter()).finish()
    }
}

/// Why no engine could take a new sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementError {
    /// Every engine that is up holds as many sandboxes as its `max` allows; `limit` is the
    /// sum of their bounds.
    Full { limit: u64 },
    /// No engine is up.
    NoneUp(RuntimeError),
}

/// A sandbox about to be created on an engine: its place is held (counted against the
/// engine's `max` by other placements of this process) until this is dropped, by then its row
/// is saved or it failed.
#[derive(Debug)]
pub struct Placement<'a> {
    engine: &'a Engine,
}

impl Placement<'_> {
    pub fn engine(&self) -> &Engine {
        self.engine
    }
}

impl Drop for Placement<'_> {
    fn drop(&mut self) {
        self.engine.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engines {
    /// The engines, in the order given (which breaks ties in placement). Names must be
    /// distinct (the configuration checks it).
    pub fn new(specs: Vec<EngineSpec>) -> Self {
        let steered = specs.len() > 1;
        let engines = specs
            .into_iter()
            .map(|spec| Engine {
                name: spec.name,
                runtime: spec.runtime,
                max: spec.max,
                runtime_name: spec.runtime_name,
                down_since: Mutex::new(None),
                pending: AtomicU64::new(0),
                steered,
            })
            .collect();
        Self { engines }
    }

    /// One engine named `default`, unbounded: a deployment without `--engine`.
    pub fn single(runtime: Arc<dyn SandboxRuntime>) -> Self {
        Self::new(vec![EngineSpec {
            name: EngineName::default_engine(),
            runtime,
            max: None,
            runtime_name: None,
        }])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Engine> {
        self.engines.iter()
    }

    pub fn len(&self) -> usize {
        self.engines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// Whether at least one engine is up.
    pub fn any_up(&self) -> bool {
        self.engines.iter().any(Engine::is_up)
    }

    /// The engine named `name`; a name this process was not given is an error that says so:
    /// every replica must be given the same set of engines.
    pub fn get(&self, name: &EngineName) -> Result<&Engine, RuntimeError> {
        self.engines.iter().find(|engine| engine.name == *name).ok_or_else(|| {
            let known: Vec<&str> = self.engines.iter().map(|e| e.name.as_str()).collect();
            RuntimeError::UnknownEngine { engine: name.to_string(), known: known.join(", ") }
        })
    }

    /// The engine the session's container runs on.
    pub fn engine_of(&self, session: &SandboxSession) -> Result<&Engine, RuntimeError> {
        self.get(&session.engine)
    }

    /// The runtime of the session's engine while it is up ([`Engine::runtime_if_up`]).
    pub fn runtime_of(
        &self,
        session: &SandboxSession,
    ) -> Result<&Arc<dyn SandboxRuntime>, RuntimeError> {
        self.engine_of(session)?.runtime_if_up()
    }

    /// Whether placement needs the running counts: only when some engine has a bound or
    /// there is more than one engine to choose from.
    pub fn needs_counts(&self) -> bool {
        self.engines.len() > 1 || self.engines.iter().any(|engine| engine.max.is_some())
    }

    /// Picks the engine for a new sandbox among those that are up and have room, given the
    /// running sessions per engine (`running`, as the store counts them; an engine missing
    /// there runs none) and leaving out `excluded` (engines that just failed this create).
    /// The engine with the most free room comes first (an unbounded one has the most), then
    /// the one running fewer, then the order the engines were given in.
    pub fn place(
        &self,
        running: &[(EngineName, u64)],
        excluded: &[EngineName],
    ) -> Result<Placement<'_>, PlacementError> {
        let mut limit = 0u64;
        let mut best: Option<(&Engine, u64, u64)> = None;
        let mut any_up = false;
        for engine in self.engines.iter() {
            if engine.is_avoided() || excluded.contains(&engine.name) {
                continue;
            }
            any_up = true;
            let counted = running
                .iter()
                .find(|(name, _)| *name == engine.name)
                .map_or(0, |(_, count)| *count)
                .saturating_add(engine.pending.load(Ordering::SeqCst));
            let free = match engine.max {
                Some(max) => {
                    limit = limit.saturating_add(max);
                    max.saturating_sub(counted)
                }
                None => u64::MAX,
            };
            if free == 0 {
                continue;
            }
            let better = match best {
                None => true,
                Some((_, best_free, best_counted)) => {
                    free > best_free || (free == best_free && counted < best_counted)
                }
            };
            if better {
                best = Some((engine, free, counted));
            }
        }
        match best {
            Some((engine, ..)) => {
                engine.pending.fetch_add(1, Ordering::SeqCst);
                Ok(Placement { engine })
            }
            None if any_up => Err(PlacementError::Full { limit }),
            None => Err(PlacementError::NoneUp(RuntimeError::Unavailable(
                "no container engine is up".into(),
            ))),
        }
    }
}

/// One engine named `default` ([`Engines::single`]).
impl From<Arc<dyn SandboxRuntime>> for Engines {
    fn from(runtime: Arc<dyn SandboxRuntime>) -> Self {
        Self::single(runtime)
    }
}

/// One engine named `default` ([`Engines::single`]).
impl<R: SandboxRuntime + 'static> From<Arc<R>> for Engines {
    fn from(runtime: Arc<R>) -> Self {
        Self::single(runtime)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    struct Nothing;
    #[async_trait::async_trait]
    impl SandboxRuntime for Nothing {
        async fn create(
            &self,
            _: &crate::ContainerSpec,
        ) -> Result<sandkeeper_domain::ContainerId, RuntimeError> {
            unreachable!()
        }
        async fn stop(&self, _: &sandkeeper_domain::ContainerId) -> Result<(), RuntimeError> {
            unreachable!()
        }
        async fn inspect(
            &self,
            _: &sandkeeper_domain::ContainerId,
        ) -> Result<crate::ContainerState, RuntimeError> {
            unreachable!()
        }
        async fn list_managed(&self) -> Result<Vec<crate::ManagedContainer>, RuntimeError> {
            unreachable!()
        }
        async fn ping(&self) -> Result<(), RuntimeError> {
            unreachable!()
        }
    }

    fn name(value: &str) -> EngineName {
        EngineName::parse(value).unwrap()
    }

    fn engines(maxes: &[(&str, Option<u64>)]) -> Engines {
        Engines::new(
            maxes
                .iter()
                .map(|(n, max)| EngineSpec {
                    name: name(n),
                    runtime: Arc::new(Nothing),
                    max: *max,
                    runtime_name: None,
                })
                .collect(),
        )
    }

    #[test]
    fn the_engine_with_the_most_free_room_comes_first_and_pending_places_count() {
        let set = engines(&[("a", Some(3)), ("b", Some(5))]);
        let running = [(name("a"), 1), (name("b"), 4)];
        let first = set.place(&running, &[]).unwrap();
        assert_eq!(first.engine().name().as_str(), "a", "a has 2 free, b 1");
        let second = set.place(&running, &[]).unwrap();
        assert_eq!(
            second.engine().name().as_str(),
            "a",
            "a has 1 free with one pending, b 1; a runs fewer"
        );
        let third = set.place(&running, &[]).unwrap();
        assert_eq!(third.engine().name().as_str(), "b");
        assert_eq!(set.place(&running, &[]).err(), Some(PlacementError::Full { limit: 8 }));
        drop(third);
        assert_eq!(set.place(&running, &[]).unwrap().engine().name().as_str(), "b");
    }

    #[test]
    fn unbounded_engines_spread_by_running_count_and_down_or_excluded_engines_are_skipped() {
        let set = engines(&[("a", None), ("b", None)]);
        let running = [(name("a"), 2), (name("b"), 1)];
        assert_eq!(set.place(&running, &[]).unwrap().engine().name().as_str(), "b");
        assert_eq!(set.place(&running, &[name("b")]).unwrap().engine().name().as_str(), "a");
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 0).unwrap();
        assert!(set.get(&name("b")).unwrap().mark_down(now));
        assert_eq!(set.place(&running, &[]).unwrap().engine().name().as_str(), "a");
        assert!(set.get(&name("a")).unwrap().mark_down(now));
        assert!(matches!(set.place(&running, &[]), Err(PlacementError::NoneUp(_))));
        assert!(!set.any_up());
        let single = engines(&[("only", None)]);
        let only = single.get(&name("only")).unwrap();
        only.mark_down(now);
        assert!(!only.is_up() && !only.is_avoided() && only.runtime_if_up().is_ok());
        assert_eq!(single.place(&[], &[]).unwrap().engine().name().as_str(), "only");
        assert!(set.get(&name("a")).unwrap().mark_up());
        assert!(set.any_up());
    }

    #[test]
    fn an_unknown_engine_is_named_with_the_known_ones() {
        let set = engines(&[("a", None), ("b", None)]);
        let error = set.get(&name("c")).unwrap_err().to_string();
        assert!(error.contains("`c`") && error.contains("(a, b)"), "{error}");
        assert!(error.contains("same --engine set"), "{error}");
    }
}
