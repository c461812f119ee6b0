//! Test plugin: a well-formed component that exports the wrong interface.
#![allow(unsafe_code)] // the export glue wit-bindgen generates in this crate is unsafe by nature

wit_bindgen::generate!({
    inline: "package test:wrong; world wrong { export hello: func() -> string; }",
});

struct Wrong;

impl Guest for Wrong {
    fn hello() -> String {
        "hello".into()
    }
}

export!(Wrong);
