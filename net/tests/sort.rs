//! SORT and SORT_RO against the real binary through the `redis` crate: numbers,
//! ALPHA, DESC and LIMIT, BY and GET patterns (strings and hash fields), STORE
//! (and STORE of nothing deleting the destination), and the errors.

mod common;

use common::{error_of, query, temp_dir, ShoalProcess};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sort_orders_filters_looks_up_and_stores_as_redis_does() {
    let dir = temp_dir("sort");
    let node = ShoalProcess::start(&dir, &[]);
    let mut c = node.client();
    let _: () = query(&mut c, &["RPUSH", "l", "3", "1", "2", "10"]);
    let sorted: Vec<String> = query(&mut c, &["SORT", "l"]);
    assert_eq!(sorted, strings(&["1", "2", "3", "10"]));
    let top: Vec<String> = query(&mut c, &["SORT", "l", "DESC", "LIMIT", "0", "2"]);
    assert_eq!(top, strings(&["10", "3"]));
    let alpha: Vec<String> = query(&mut c, &["SORT_RO", "l", "ALPHA"]);
    assert_eq!(alpha, strings(&["1", "10", "2", "3"]));

    let _: () = query(
        &mut c,
        &[
            "MSET", "w_3", "1", "w_1", "30", "w_2", "20", "w_10", "5", "o_1", "one",
        ],
    );
    let by: Vec<Option<String>> = query(
        &mut c,
        &["SORT", "l", "BY", "w_*", "GET", "#", "GET", "o_*"],
    );
    let expected = [("3", None), ("10", None), ("2", None), ("1", Some("one"))];
    let expected: Vec<Option<String>> = expected
        .iter()
        .flat_map(|(e, o)| [Some(e.to_string()), o.map(str::to_string)])
        .collect();
    assert_eq!(by, expected);
    let _: () = query(&mut c, &["HSET", "h_1", "f", "9"]);
    let by_field: Vec<String> = query(&mut c, &["SORT", "l", "BY", "h_*->f"]);
    assert_eq!(
        by_field,
        strings(&["10", "2", "3", "1"]),
        "missing weights are 0, ties in byte order"
    );
    let unsorted: Vec<String> = query(&mut c, &["SORT", "l", "BY", "nosort"]);
    assert_eq!(unsorted, strings(&["3", "1", "2", "10"]));

    let stored: i64 = query(&mut c, &["SORT", "l", "STORE", "dst"]);
    assert_eq!(stored, 4);
    let list: Vec<String> = query(&mut c, &["LRANGE", "dst", "0", "-1"]);
    assert_eq!(list, strings(&["1", "2", "3", "10"]));
    let nothing: i64 = query(&mut c, &["SORT", "missing", "STORE", "dst"]);
    assert_eq!(nothing, 0);
    let exists: i64 = query(&mut c, &["EXISTS", "dst"]);
    assert_eq!(exists, 0, "storing nothing deletes the destination");

    let _: () = query(&mut c, &["SADD", "s", "b", "a", "c"]);
    let members: Vec<String> = query(&mut c, &["SORT", "s", "ALPHA"]);
    assert_eq!(members, strings(&["a", "b", "c"]));
    let _: () = query(&mut c, &["ZADD", "z", "3", "x", "1", "y", "2", "w"]);
    let by_score: Vec<String> = query(&mut c, &["SORT", "z", "BY", "nosort"]);
    assert_eq!(by_score, strings(&["y", "w", "x"]));
    assert!(error_of(&mut c, &["SORT", "s"]).contains("can't be converted into double"));
    assert!(error_of(&mut c, &["SORT_RO", "l", "STORE", "x"]).contains("syntax error"));
    let _: () = query(&mut c, &["SET", "str", "x"]);
    assert!(error_of(&mut c, &["SORT", "str"]).contains("WRONGTYPE"));
}
