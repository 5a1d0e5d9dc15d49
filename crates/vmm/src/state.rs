//! The VM lifecycle (seed 3.2.2): explicit states and the verbs that move between them.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VmState {
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Pause,
    Resume,
    Stop,
}

impl VmState {
    /// The state a verb leads to, or why it is refused in this state.
    pub fn apply(self, verb: Verb) -> Result<VmState, String> {
        use Verb::*;
        use VmState::*;
        match (self, verb) {
            (Created, Start) => Ok(Running),
            (Running, Pause) => Ok(Paused),
            (Paused, Resume) => Ok(Running),
            (Created | Running | Paused, Stop) => Ok(Stopped),
            (s, v) => Err(format!("cannot {v:?} a VM that is {s:?}").to_lowercase()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_transitions() {
        let s = VmState::Created.apply(Verb::Start).unwrap();
        assert_eq!(s, VmState::Running);
        let s = s.apply(Verb::Pause).unwrap();
        assert!(s.apply(Verb::Pause).is_err());
        let s = s.apply(Verb::Resume).unwrap();
        assert_eq!(s.apply(Verb::Stop).unwrap(), VmState::Stopped);
        assert_eq!(
            VmState::Stopped.apply(Verb::Resume).unwrap_err(),
            "cannot resume a vm that is stopped"
        );
    }
}
