use super::*;

#[test]
fn ids_parse_from_lists_json_and_files() {
    assert_eq!(parse_ids("1,2, 3").unwrap(), vec![1, 2, 3]);
    assert_eq!(parse_ids("[4, 5]").unwrap(), vec![4, 5]);
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "7 8\n9\n").unwrap();
    assert_eq!(
        parse_ids(f.path().to_str().unwrap()).unwrap(),
        vec![7, 8, 9]
    );
    assert!(format!("{:#}", parse_ids("1,x").unwrap_err()).contains("`x`"));
}
