//! Who is on call: pure functions of the rota and the time.

use peerhub_protocol::escalation::RotaEntry;
use peerhub_protocol::PublicKey;

/// The supervisors on call at `level` at `now`, without repeats, in rota order.
pub fn on_call(rota: &[RotaEntry], level: u8, now: u64) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    for entry in rota {
        if entry.level == level
            && entry.start_ms <= now
            && now < entry.end_ms
            && !keys.contains(&entry.supervisor)
        {
            keys.push(entry.supervisor);
        }
    }
    keys
}

/// Whether anyone is on call at any level now.
pub fn covered(rota: &[RotaEntry], now: u64) -> bool {
    rota.iter().any(|e| e.start_ms <= now && now < e.end_ms)
}

/// The next moment the coverage may change (a window starting or ending).
pub fn next_change(rota: &[RotaEntry], now: u64) -> Option<u64> {
    rota.iter()
        .flat_map(|e| [e.start_ms, e.end_ms])
        .filter(|&t| t > now)
        .min()
}

/// Checks a rota an admin wants to set; says what is wrong.
pub fn validate(rota: &[RotaEntry]) -> Result<(), &'static str> {
    if rota.len() > 1000 {
        return Err("a rota has at most 1000 entries");
    }
    for entry in rota {
        if entry.start_ms >= entry.end_ms {
            return Err("each rota window must end after it starts");
        }
        if !(1..=2).contains(&entry.level) {
            return Err("rota levels are 1 (primary) and 2 (second line)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(byte: u8, start: u64, end: u64, level: u8) -> RotaEntry {
        RotaEntry {
            supervisor: PublicKey([byte; 32]),
            start_ms: start,
            end_ms: end,
            level,
        }
    }

    #[test]
    fn on_call_follows_windows_and_levels() {
        let rota = [
            entry(1, 0, 100, 1),
            entry(2, 50, 150, 1),
            entry(3, 0, 200, 2),
            entry(1, 0, 100, 1),
        ];
        assert_eq!(on_call(&rota, 1, 10), vec![PublicKey([1; 32])]);
        assert_eq!(
            on_call(&rota, 1, 60),
            vec![PublicKey([1; 32]), PublicKey([2; 32])]
        );
        assert_eq!(
            on_call(&rota, 1, 100),
            vec![PublicKey([2; 32])],
            "end is exclusive"
        );
        assert_eq!(on_call(&rota, 2, 199), vec![PublicKey([3; 32])]);
        assert!(on_call(&rota, 1, 150).is_empty());
        assert!(covered(&rota, 199) && !covered(&rota, 200));
        assert_eq!(next_change(&rota, 60), Some(100));
    }

    #[test]
    fn bad_rotas_are_refused() {
        assert!(validate(&[entry(1, 5, 5, 1)]).is_err());
        assert!(validate(&[entry(1, 0, 5, 3)]).is_err());
        assert!(validate(&[entry(1, 0, 5, 2)]).is_ok());
    }
}
