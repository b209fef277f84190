use std::sync::Arc;

use super::*;

#[test]
fn waiters_get_the_version_they_need_or_an_error_when_closed() {
    let store = Arc::new(PolicyStore::new(0u32));
    assert_eq!(store.wait_for(0).unwrap(), (0, 0));
    let s = store.clone();
    let waiter = std::thread::spawn(move || s.wait_for(2));
    store.publish(1, 10);
    std::thread::sleep(Duration::from_millis(20));
    store.publish(2, 20);
    assert_eq!(waiter.join().unwrap().unwrap(), (2, 20));
    let s = store.clone();
    let waiter = std::thread::spawn(move || s.wait_for(5));
    store.close();
    let err = waiter.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("step 5"), "{err}");
}
