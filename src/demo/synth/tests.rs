use super::*;

/// Mean brightness of the image inside each zone's window.
fn zone_means(img: &image::GrayImage) -> Vec<f32> {
    let s = img.width() as f32;
    ZONES
        .iter()
        .map(|&(_, zx, zy)| {
            let (x0, y0) = ((zx * s) as i32, (zy * s) as i32);
            let r = (0.08 * s) as i32;
            let mut sum = 0.0;
            let mut n = 0.0;
            for y in y0 - r..=y0 + r {
                for x in x0 - r..=x0 + r {
                    sum += img.get_pixel(x as u32, y as u32).0[0] as f32;
                    n += 1.0;
                }
            }
            sum / n
        })
        .collect()
}

#[test]
fn the_answer_is_in_the_pixels_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let qs = generate(dir.path(), "train", 40, 64, 7).unwrap();
    let mut letters = std::collections::BTreeSet::new();
    for q in &qs {
        let img = image::open(dir.path().join(&q.image)).unwrap().to_luma8();
        let means = zone_means(&img);
        let brightest = (0..4)
            .max_by(|&a, &b| means[a].total_cmp(&means[b]))
            .unwrap();
        assert_eq!(brightest, q.zone, "{}: {means:?}", q.id);
        let opt = &q.options[(q.letter as u8 - b'A') as usize];
        assert!(opt.to_lowercase().contains(ZONES[q.zone].0), "{opt}");
        letters.insert(q.letter);
    }
    assert_eq!(
        letters.len(),
        4,
        "correct letters vary, so the letter alone tells nothing"
    );
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("train.json")).unwrap())
            .unwrap();
    assert_eq!(json.as_object().unwrap().len(), 40);
    assert_eq!(
        json["demo-train-00000"]["correct_answer"],
        qs[0].letter.to_string()
    );
}

#[test]
fn fixed_option_order_keeps_letters_uniform_and_only_the_image_tells() {
    let dir = tempfile::tempdir().unwrap();
    let qs = generate_with(dir.path(), "train", 80, 32, 7, Task::Location, false).unwrap();
    let mut counts = [0usize; 4];
    for q in &qs {
        assert_eq!(q.options[0], "A. Right upper zone");
        assert_eq!(q.options[3], "D. Left lower zone");
        assert_eq!(q.letter, (b'A' + q.zone as u8) as char);
        counts[q.zone] += 1;
    }
    assert!(
        counts.iter().all(|&c| c >= 10),
        "zones drawn uniformly: {counts:?}"
    );
}

/// Mean brightness of an image.
fn mean(img: &image::GrayImage) -> f32 {
    img.pixels().map(|p| p.0[0] as f32).sum::<f32>() / (img.width() * img.height()) as f32
}

#[test]
fn extent_grows_with_the_answer_and_answers_are_uniform() {
    let dir = tempfile::tempdir().unwrap();
    let qs = generate_with(dir.path(), "train", 120, 64, 7, Task::Extent, false).unwrap();
    let mut by_class = [(0.0f32, 0usize); 4];
    for q in &qs {
        assert_eq!(q.options[0], "A. None");
        assert_eq!(q.options[3], "D. Large");
        assert_eq!(q.letter, (b'A' + q.answer as u8) as char);
        let img = image::open(dir.path().join(&q.image)).unwrap().to_luma8();
        by_class[q.answer].0 += mean(&img);
        by_class[q.answer].1 += 1;
    }
    let means: Vec<f32> = by_class.iter().map(|(s, n)| s / *n as f32).collect();
    assert!(
        by_class.iter().all(|c| c.1 >= 15),
        "classes drawn uniformly: {by_class:?}"
    );
    assert!(
        means.windows(2).all(|w| w[1] > w[0] + 0.5),
        "a larger opacity brightens the image more: {means:?}"
    );
}

/// Mean brightness inside both lung fields (the haze task's evidence).
fn lung_mean(img: &image::GrayImage) -> f32 {
    let s = img.width() as f32;
    let (mut sum, mut n) = (0.0, 0.0);
    for (x, y, p) in img.enumerate_pixels() {
        let (u, v) = (x as f32 / s, y as f32 / s);
        let inside = [0.30f32, 0.70]
            .iter()
            .any(|cx| ((u - cx) / 0.18).powi(2) + ((v - 0.52) / 0.32).powi(2) < 0.5);
        if inside {
            sum += p.0[0] as f32;
            n += 1.0;
        }
    }
    sum / n
}

#[test]
fn haze_brightens_the_lungs_with_the_answer_and_classes_do_not_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let qs = generate_with(dir.path(), "train", 120, 64, 7, Task::Haze, false).unwrap();
    let mut range = [(f32::MAX, f32::MIN, 0usize); 4];
    for q in &qs {
        assert_eq!(q.options[0], "A. None");
        assert_eq!(q.options[3], "D. Severe");
        assert_eq!(q.letter, (b'A' + q.answer as u8) as char);
        let m = lung_mean(&image::open(dir.path().join(&q.image)).unwrap().to_luma8());
        let r = &mut range[q.answer];
        *r = (r.0.min(m), r.1.max(m), r.2 + 1);
    }
    assert!(
        range.iter().all(|r| r.2 >= 15),
        "classes drawn uniformly: {range:?}"
    );
    assert!(
        range.windows(2).all(|w| w[1].0 > w[0].1),
        "every image of a denser class has brighter lungs than any of the class below: {range:?}"
    );
}

#[test]
fn generation_is_reproducible_and_splits_differ() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let qa = generate(a.path(), "train", 5, 32, 3).unwrap();
    let qb = generate(b.path(), "train", 5, 32, 3).unwrap();
    assert_eq!(qa, qb);
    for q in &qa {
        assert_eq!(
            std::fs::read(a.path().join(&q.image)).unwrap(),
            std::fs::read(b.path().join(&q.image)).unwrap()
        );
    }
    let qv = generate(a.path(), "val", 5, 32, 3).unwrap();
    assert_ne!(
        qa.iter().map(|q| q.zone).collect::<Vec<_>>(),
        qv.iter().map(|q| q.zone).collect::<Vec<_>>()
    );
}
