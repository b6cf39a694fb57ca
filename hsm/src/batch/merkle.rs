//! The Merkle tree of a batch: the tree shape and hashes of
//! [RFC 9162 §2.1](https://www.rfc-editor.org/rfc/rfc9162#section-2.1) (the same as RFC 6962 §2.1)
//! over SHA-256, audit paths (§2.1.3.1) and their verification (§2.1.3.2).
//!
//! Pure code: hashes in, hashes out.

use sha2::{Digest, Sha256};

/// A SHA-256 value: a leaf hash, an interior node hash or a root.
pub type Hash = [u8; 32];

/// Longest audit path of any tree: a tree of at most 2^64 leaves is at most 64 levels deep.
pub const MAX_PATH_LEN: usize = 64;

/// The hash of a leaf: `SHA-256(0x00 || input)`.
pub fn leaf_hash(input: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(input)
        .finalize()
        .into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// A complete tree over a list of leaf hashes, kept level by level so that audit paths are copies.
///
/// Levels are built bottom-up: neighbours are paired left to right, and a last node without a
/// partner moves up unchanged. This gives the root and paths of RFC 9162's recursive definition
/// (split at the largest power of two below the size) for every size.
#[derive(Clone, Debug)]
pub struct Tree {
    /// `levels[0]` are the leaf hashes; the last level holds the root alone.
    levels: Vec<Vec<Hash>>,
}

// === impl Tree ===

impl Tree {
    /// Builds the tree over `leaves` (leaf hashes, see [`leaf_hash`]).
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|level| level.len() > 1) {
            let (pairs, odd) = level.as_chunks::<2>();
            let up = pairs
                .iter()
                .map(|[left, right]| node_hash(left, right))
                .chain(odd.first().copied());
            levels.push(up.collect());
        }
        Tree { levels }
    }

    /// The number of leaves.
    pub fn size(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// The root hash (`MTH` of RFC 9162); the hash of the empty string for an empty tree.
    pub fn root(&self) -> Hash {
        match self.levels.last().and_then(|level| level.first()) {
            Some(root) => *root,
            None => Sha256::digest([]).into(),
        }
    }

    /// The audit path (`PATH(m, D[n])` of RFC 9162 §2.1.3.1) of leaf `index`, bottom-up; `None`
    /// when the index is out of range.
    pub fn audit_path(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.size() {
            return None;
        }
        let mut path = Vec::with_capacity(self.levels.len().saturating_sub(1));
        let mut at = index;
        for level in &self.levels {
            // The last node of an odd level has no sibling and gets none in the path.
            path.extend(level.get(at ^ 1));
            at >>= 1;
        }
        Some(path)
    }
}

/// Recomputes the root from a leaf hash, its index, the tree size and its audit path, with the
/// algorithm of RFC 9162 §2.1.3.2.
///
/// Returns `None` when the index is not below the size or the path has the wrong length for them;
/// the caller compares the result with the root it trusts.
pub fn root_from_path(leaf: &Hash, index: u64, size: u64, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// The length of the audit path of leaf `index` in a tree of `size` leaves; `None` when the index
/// is not below the size. Decoders use it to refuse a path of the wrong length before hashing.
pub fn path_len(index: u64, size: u64) -> Option<usize> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut len = 0;
    // The steps of `root_from_path`, without the hashes.
    while s != 0 {
        if f & 1 == 0 && f == s {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        f >>= 1;
        s >>= 1;
        len += 1;
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(hash: &Hash) -> String {
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The leaves of the Certificate Transparency test vectors (RFC 6962 reference data).
    const CT_LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    /// Their roots for tree sizes 0 to 8.
    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn ct_leaf_hashes(n: usize) -> Vec<Hash> {
        CT_LEAVES[..n].iter().map(|leaf| leaf_hash(leaf)).collect()
    }

    #[test]
    fn roots_match_the_ct_vectors() {
        for (n, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(hex(&Tree::new(ct_leaf_hashes(n)).root()), *want, "size {n}");
        }
    }

    #[test]
    fn paths_match_the_ct_vectors() {
        let tree = Tree::new(ct_leaf_hashes(8));
        let cases: [(usize, [&str; 3]); 2] = [
            (
                0,
                [
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                [
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, want) in cases {
            let path: Vec<String> = tree.audit_path(index).unwrap().iter().map(hex).collect();
            assert_eq!(path, want, "leaf {index}");
        }
    }

    /// MTH of RFC 9162 §2.1.1, written as the recursion.
    fn naive_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let k = split(n);
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    /// PATH of RFC 9162 §2.1.3.1, written as the recursion.
    fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        let (mut path, sibling) = if m < k {
            (naive_path(m, &leaves[..k]), naive_root(&leaves[k..]))
        } else {
            (naive_path(m - k, &leaves[k..]), naive_root(&leaves[..k]))
        };
        path.push(sibling);
        path
    }

    /// The largest power of two smaller than `n`.
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    #[test]
    fn every_size_matches_the_recursive_definition() {
        let all: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=all.len() {
            let leaves = &all[..n];
            let tree = Tree::new(leaves.to_vec());
            let root = tree.root();
            assert_eq!(root, naive_root(leaves), "size {n}");
            assert!(tree.audit_path(n).is_none());
            for (m, leaf) in leaves.iter().enumerate() {
                let path = tree.audit_path(m).unwrap();
                assert_eq!(path, naive_path(m, leaves), "size {n}, leaf {m}");
                assert_eq!(path_len(m as u64, n as u64), Some(path.len()));
                assert_eq!(root_from_path(leaf, m as u64, n as u64, &path), Some(root));
                // Another index, or a shorter or longer path, leads elsewhere. (Another size can
                // lead to the same root: the size is bound by the root signature, not the path.)
                let other = ((m + 1) % n) as u64;
                if other != m as u64 {
                    assert_ne!(root_from_path(leaf, other, n as u64, &path), Some(root));
                }
                if let Some((_, shorter)) = path.split_last() {
                    assert_eq!(root_from_path(leaf, m as u64, n as u64, shorter), None);
                }
                let mut longer = path.clone();
                longer.push(root);
                assert_eq!(root_from_path(leaf, m as u64, n as u64, &longer), None);
            }
        }
    }

    #[test]
    fn out_of_range_is_refused() {
        assert_eq!(root_from_path(&[0; 32], 0, 0, &[]), None);
        assert_eq!(root_from_path(&[0; 32], 5, 5, &[]), None);
        assert_eq!(path_len(5, 5), None);
        assert_eq!(path_len(0, 1), Some(0));
        assert_eq!(path_len(0, u64::MAX), Some(MAX_PATH_LEN));
    }
}
