//! A valid component of some other world (tests world checking).

wit_bindgen::generate!({
    inline: "
        package other:thing@1.0.0;
        interface greet { hello: func() -> string; }
        world other { export greet; }
    ",
    world: "other",
});

struct Impl;

impl exports::other::thing::greet::Guest for Impl {
    fn hello() -> String {
        "hello".into()
    }
}

export!(Impl);
