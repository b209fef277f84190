use super::*;

#[test]
fn each_epoch_is_a_permutation_and_epochs_differ() {
    let a = permutation(50, 42, 0);
    let b = permutation(50, 42, 1);
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..50).collect::<Vec<_>>());
    assert_ne!(a, b);
    assert_eq!(a, permutation(50, 42, 0));
    assert_ne!(a, permutation(50, 43, 0));
}

#[test]
fn resuming_from_a_cursor_continues_the_same_stream() {
    let full: Vec<usize> = draws(7, 9, Cursor::default())
        .map(|x| x.1)
        .take(20)
        .collect();
    let (cursor, _) = draws(7, 9, Cursor::default()).nth(11).unwrap();
    let rest: Vec<usize> = draws(7, 9, cursor).map(|x| x.1).take(8).collect();
    assert_eq!(rest, full[12..20]);
    assert_eq!(
        cursor,
        Cursor {
            epoch: 1,
            position: 5
        }
    );
}

#[test]
fn total_steps_follow_max_steps_or_epochs() {
    assert_eq!(total_steps(100, 2, 30, 1.0), 30);
    assert_eq!(total_steps(101, 2, -1, 1.0), 51);
    assert_eq!(total_steps(100, 4, -1, 2.5), 63);
}
