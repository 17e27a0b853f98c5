//! What every target shares: the shipped mapping files, compiled once, and a fixed view context.
#![allow(dead_code)] // each target uses a part of it


use std::sync::LazyLock;

use image_gateway::mapping::{LinkBases, Mapping, PropertyNames, View, ViewContext};

pub const NOVA: &str = include_str!("../../mappings/nova.toml");
pub const ALLIANCE: &str = include_str!("../../mappings/alliance.toml");

pub static NOVA_MAPPING: LazyLock<Mapping> = LazyLock::new(|| {
    Mapping::compile("nova.toml", NOVA, "nova", image_gateway::nova::ACTIONS).expect("mappings/nova.toml compiles")
});

pub static ALLIANCE_MAPPING: LazyLock<Mapping> = LazyLock::new(|| {
    Mapping::compile("alliance.toml", ALLIANCE, "alliance", image_gateway::alliance::ACTIONS)
        .expect("mappings/alliance.toml compiles")
});


/// Glance 33's base image properties, as the embedded store's schema declares them.
static BASE: LazyLock<PropertyNames> = LazyLock::new(image_gateway::glance::embedded::base_properties);

static LINKS: LazyLock<LinkBases> = LazyLock::new(|| LinkBases {
    versioned: "http://gateway.example:8774/v2.1/9f1e3b2c4d5a6b7c8d9e0f1a2b3c4d5e".into(),
    unversioned: "http://gateway.example:8774/9f1e3b2c4d5a6b7c8d9e0f1a2b3c4d5e".into(),
    image_service: "http://glance.example:9292".into(),
});

pub fn context() -> ViewContext<'static> {
    ViewContext { links: &LINKS, base_properties: &BASE }
}

/// Every view a route of `mapping` renders with, each once.
pub fn views(mapping: &Mapping) -> Vec<&View> {
    let mut names: Vec<&str> = mapping.routes.iter().filter_map(|r| r.view.as_deref()).collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().filter_map(|name| mapping.view(name)).collect()
}
