//! A mix of commands by weight, such as `get:9,set:1`.

use crate::rng::Rng;

/// Commands drawn by weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix<C> {
    weighted: Vec<(C, u32)>,
    total: u32,
}

impl<C: Copy + PartialEq> Mix<C> {
    /// Parses `NAME:WEIGHT,...` (a bare `NAME` weighs 1), naming commands
    /// through `command`, which says which names exist when one does not.
    pub fn parse(text: &str, command: impl Fn(&str) -> Result<C, String>) -> Result<Self, String> {
        let mut weighted: Vec<(C, u32)> = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (name, weight) = match part.split_once(':') {
                Some((name, weight)) => (
                    name,
                    weight.parse::<u32>().map_err(|_| {
                        format!("{part:?} in the mix: the weight after ':' must be a whole number")
                    })?,
                ),
                None => (part, 1),
            };
            let name = name.to_ascii_lowercase();
            let c = command(&name)?;
            if weighted.iter().any(|(seen, _)| *seen == c) {
                return Err(format!("{name} appears twice in the mix"));
            }
            if weight > 0 {
                weighted.push((c, weight));
            }
        }
        let total = weighted
            .iter()
            .try_fold(0u32, |sum, (_, w)| sum.checked_add(*w))
            .ok_or("the mix's weights add up past 4294967295")?;
        if total == 0 {
            return Err(format!("the mix {text:?} gives no command a weight"));
        }
        Ok(Self { weighted, total })
    }

    /// One command, drawn by weight.
    pub fn pick(&self, rng: &mut Rng) -> C {
        let mut ticket = (rng.next_u64() % u64::from(self.total)) as u32;
        for (c, w) in &self.weighted {
            if ticket < *w {
                return *c;
            }
            ticket -= w;
        }
        // The tickets sum to `total`: the loop always returns.
        self.weighted[self.weighted.len() - 1].0
    }

    /// The mix as `get:9,set:1`, naming commands through `name`.
    pub fn describe(&self, name: impl Fn(C) -> &'static str) -> String {
        let parts: Vec<String> = self
            .weighted
            .iter()
            .map(|(c, w)| format!("{}:{w}", name(*c)))
            .collect();
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Result<&'static str, String> {
        match n {
            "get" => Ok("get"),
            "set" => Ok("set"),
            _ => Err(format!("no command {n}: give get or set")),
        }
    }

    #[test]
    fn draws_follow_the_weights() {
        let mix = Mix::parse("get:9,set:1", name).unwrap();
        let mut rng = Rng::new(5);
        let gets = (0..100_000).filter(|_| mix.pick(&mut rng) == "get").count();
        assert!((89_000..91_000).contains(&gets), "{gets}");
        let only = Mix::parse("SET", name).unwrap();
        assert!((0..100).all(|_| only.pick(&mut rng) == "set"));
        let zero = Mix::parse("get:0,set:3", name).unwrap();
        assert!((0..100).all(|_| zero.pick(&mut rng) == "set"));
    }

    #[test]
    fn bad_mixes_say_what_is_wrong() {
        assert!(Mix::parse("get:x", name)
            .unwrap_err()
            .contains("whole number"));
        assert!(Mix::parse("put:1", name)
            .unwrap_err()
            .contains("give get or set"));
        assert!(Mix::parse("get,get", name).unwrap_err().contains("twice"));
        assert!(Mix::parse("get:0", name)
            .unwrap_err()
            .contains("no command a weight"));
    }
}
