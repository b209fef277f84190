use super::*;

fn rexvqa() -> PathResolver {
    ImagePaths::new(
        Some(Path::new("/data/rexvqa/metadata")),
        None,
        &[Path::new("/data/rexvqa/metadata/train.json")],
    )
    .resolver(Path::new("/data/rexvqa/metadata/train.json"))
}

fn ok(r: &PathResolver, given: &str) -> (String, String) {
    let got = r.resolve(given).unwrap_or_else(|e| panic!("{given}: {e}"));
    (got.path.display().to_string(), got.key)
}

/// ReXVQA's `../deid_png/…` paths resolve one level above `metadata` and keep the keys they
/// always had (relative to the data root, whatever the mount point).
#[test]
fn rexvqa_paths_resolve_and_keep_their_keys() {
    let r = rexvqa();
    assert_eq!(
        ok(&r, "../deid_png/p1/s1/a.png"),
        (
            "/data/rexvqa/deid_png/p1/s1/a.png".into(),
            "deid_png/p1/s1/a.png".into()
        )
    );
    assert_eq!(ok(&r, "./../deid_png/x/../a.png").1, "deid_png/a.png");
    assert_eq!(
        ok(&r, "/data/rexvqa/deid_png/b.png").1,
        "deid_png/b.png",
        "an absolute path inside the root is fine"
    );
}

/// `sub/a.png` and `../sub/a.png` are different files: they get different keys (the old key
/// stripped `..` and gave both `sub/a.png`).
#[test]
fn different_files_never_share_a_key() {
    let r = rexvqa();
    let (pa, ka) = ok(&r, "sub/a.png");
    let (pb, kb) = ok(&r, "../sub/a.png");
    assert_ne!(pa, pb);
    assert_ne!(ka, kb, "{ka} vs {kb}");
    assert_eq!(ka, "metadata/sub/a.png");
    assert_eq!(kb, "sub/a.png");
    // Two splits in different folders without image_root: the same given name is two files.
    let rules = ImagePaths::new(
        None,
        None,
        &[Path::new("/d/x/train.json"), Path::new("/d/y/val.json")],
    );
    let a = rules
        .resolver(Path::new("/d/x/train.json"))
        .resolve("a.png");
    let b = rules.resolver(Path::new("/d/y/val.json")).resolve("a.png");
    assert_eq!(a.unwrap().key, "x/a.png");
    assert_eq!(b.unwrap().key, "y/a.png");
}

/// Paths that leave the allowed folders are refused, naming the given and resolved path.
#[test]
fn paths_outside_the_allowed_roots_are_refused() {
    let r = rexvqa();
    for given in [
        "../../../../etc/passwd",
        "/etc/passwd",
        "../../rexvqa2/a.png",
    ] {
        let e = r.resolve(given).unwrap_err();
        assert!(e.contains(given), "{e}");
        assert!(
            e.contains("outside the allowed image folders (/data/rexvqa)"),
            "{e}"
        );
        assert!(e.contains("data.allowed_roots"), "{e}");
    }
    assert!(
        r.resolve("../../../../etc/passwd")
            .unwrap_err()
            .contains("/etc/passwd,")
    );
    assert!(r.resolve("..").unwrap_err().contains("itself"));
}

/// `data.allowed_roots` replaces the default: narrower (image_root only) or wider (a second
/// disk), with keys relative to the roots' common folder.
#[test]
fn configured_roots_replace_the_default() {
    let split = Path::new("/data/rexvqa/metadata/train.json");
    let narrow = ImagePaths::new(
        Some(Path::new("/data/rexvqa/metadata")),
        Some(&["/data/rexvqa/metadata".to_string()]),
        &[split],
    )
    .resolver(split);
    assert!(narrow.resolve("../deid_png/a.png").is_err());
    assert_eq!(ok(&narrow, "img/a.png").1, "img/a.png");
    let wide = ImagePaths::new(
        Some(Path::new("/data/rexvqa/metadata")),
        Some(&["/data/rexvqa".to_string(), "/mnt/extra".to_string()]),
        &[split],
    );
    assert_eq!(wide.anchor(), Path::new("/"));
    let w = wide.resolver(split);
    assert_eq!(ok(&w, "/mnt/extra/a.png").1, "mnt/extra/a.png");
    assert_eq!(ok(&w, "../deid_png/a.png").1, "data/rexvqa/deid_png/a.png");
}

/// A base folder right under `/` is its own root (its parent would allow the whole disk), and
/// relative folders are taken from the working directory.
#[test]
fn roots_are_absolute_and_never_the_filesystem_root() {
    let rules = ImagePaths::new(Some(Path::new("/data")), None, &[Path::new("x.json")]);
    assert_eq!(rules.roots(), [PathBuf::from("/data")]);
    assert!(
        rules
            .resolver(Path::new("x.json"))
            .resolve("../etc/passwd")
            .is_err()
    );
    let rel = ImagePaths::new(Some(Path::new("data/meta")), None, &[Path::new("t.json")]);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(rel.roots(), [cwd.join("data")]);
    let got = rel
        .resolver(Path::new("t.json"))
        .resolve("../img/a.png")
        .unwrap();
    assert_eq!(got.path, cwd.join("data/img/a.png"));
    assert_eq!(got.key, "img/a.png");
    assert_eq!(
        normalize(Path::new("/../a/./b/../c")),
        PathBuf::from("/a/c")
    );
    assert_eq!(normalize(Path::new("../../a")), PathBuf::from("../../a"));
}

/// A 10 MB path is not echoed whole.
#[test]
fn long_paths_are_clipped_in_errors() {
    let given = format!("/{}", "x".repeat(10 << 20));
    let e = rexvqa().resolve(&given).unwrap_err();
    assert!(e.len() < 2000, "{} bytes", e.len());
    assert!(e.contains("bytes)"));
}
