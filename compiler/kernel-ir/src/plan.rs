//! The buffer plan: arena offsets for temporaries, reusing memory whose
//! lifetime (first to last kernel that touches it) has ended.

use crate::ir::*;

/// Arena offsets are multiples of this many elements (64 bytes), so that
/// every temporary starts on a cache line and a full SIMD vector.
const ALIGN: usize = 16;

/// Assigns the offset of every `Arena` buffer; returns the arena's length in
/// elements. Buffers whose lifetimes overlap (sharing a kernel counts) never
/// share memory; otherwise first fit, in order of first use.
pub fn plan_arena(buffers: &mut [Buffer], kernels: &[Kernel]) -> usize {
    let mut span: Vec<Option<(usize, usize)>> = vec![None; buffers.len()];
    for (i, k) in kernels.iter().enumerate() {
        for b in k.reads().into_iter().chain(k.writes()) {
            let s = &mut span[b.0];
            *s = Some(match *s {
                Some((first, _)) => (first, i),
                None => (i, i),
            });
        }
    }
    let mut order: Vec<usize> = (0..buffers.len())
        .filter(|&b| matches!(buffers[b].storage, Storage::Arena { .. }) && span[b].is_some())
        .collect();
    order.sort_by_key(|&b| span[b].map(|s| s.0));
    // (offset, len, last kernel) of the allocations still live.
    let mut live: Vec<(usize, usize, usize)> = vec![];
    let mut arena_len = 0;
    for b in order {
        let Some((first, last)) = span[b] else {
            continue;
        };
        live.retain(|&(_, _, end)| end >= first);
        live.sort();
        let len = buffers[b].len.div_ceil(ALIGN) * ALIGN;
        let mut offset = 0;
        for &(o, l, _) in &live {
            if offset + len <= o {
                break;
            }
            offset = offset.max(o + l);
        }
        live.push((offset, len, last));
        buffers[b].storage = Storage::Arena { offset };
        arena_len = arena_len.max(offset + len);
    }
    arena_len
}
