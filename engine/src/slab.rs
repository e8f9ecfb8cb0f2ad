//! A slab of slots with generations, so stale completions can be recognised.

/// Slots that hand out stable indices and count reuses of each index.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// An empty slab with room for `capacity` values before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            slots: Vec::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// Stores `value`, returning its index and generation.
    pub fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.value = Some(value);
            return (index, slot.generation);
        }
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        ((self.slots.len() - 1) as u32, 0)
    }

    /// The value at `index` if it is still of `generation` (24 bits compared).
    pub fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        let slot = self.slots.get_mut(index as usize)?;
        if slot.generation & 0xff_ffff != generation {
            return None;
        }
        slot.value.as_mut()
    }

    /// Removes and returns the value at `index`, retiring its generation.
    pub fn remove(&mut self, index: u32) -> Option<T> {
        let slot = self.slots.get_mut(index as usize)?;
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.len -= 1;
        Some(value)
    }

    /// Number of occupied slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the highest index ever handed out (for walking the slab
    /// by index without allocating).
    pub fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The generation of the value at `index`, if the slot is occupied.
    pub fn generation_at(&self, index: u32) -> Option<u32> {
        let slot = self.slots.get(index as usize)?;
        slot.value.as_ref().map(|_| slot.generation & 0xff_ffff)
    }

    /// Every occupied slot: its index, generation and value.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, u32, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| {
            let generation = s.generation & 0xff_ffff;
            s.value.as_mut().map(|v| (i as u32, generation, v))
        })
    }

    /// Indices and generations of every occupied slot.
    #[cfg(test)]
    pub fn keys(&self) -> Vec<(u32, u32)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.value.is_some())
            .map(|(i, s)| (i as u32, s.generation & 0xff_ffff))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_slot_rejects_old_generation() {
        let mut slab = Slab::default();
        let (i, g) = slab.insert("a");
        assert_eq!(slab.remove(i), Some("a"));
        let (j, h) = slab.insert("b");
        assert_eq!(i, j);
        assert_ne!(g, h);
        assert!(slab.get_mut(i, g).is_none());
        assert_eq!(slab.get_mut(j, h), Some(&mut "b"));
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.keys(), vec![(j, h)]);
        assert_eq!(slab.capacity(), 1);
        assert_eq!(slab.generation_at(j), Some(h));
        assert_eq!(slab.generation_at(7), None);
    }
}
