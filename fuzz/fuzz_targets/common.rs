//! What every target shares: the shipped mapping files, compiled once, and a fixed view context.
#![allow(dead_code)] // each target uses a part of it

use std::sync::LazyLock;

use image_gateway::alliance::AllianceMapping;
use image_gateway::mapping::{LinkBases, PropertyNames, QueryMap, View, ViewContext};
use image_gateway::nova::NovaMapping;

pub const NOVA: &str = include_str!("../../mappings/nova.toml");
pub const ALLIANCE: &str = include_str!("../../mappings/alliance.toml");

pub static NOVA_MAPPING: LazyLock<NovaMapping> =
    LazyLock::new(|| NovaMapping::compile("nova.toml", NOVA).expect("mappings/nova.toml compiles"));

pub static ALLIANCE_MAPPING: LazyLock<AllianceMapping> =
    LazyLock::new(|| AllianceMapping::compile("alliance.toml", ALLIANCE).expect("mappings/alliance.toml compiles"));

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

/// Every view of both shipped files.
pub fn views() -> impl Iterator<Item = &'static View> {
    NOVA_MAPPING.views().chain(ALLIANCE_MAPPING.views())
}

/// Every query map of both shipped files.
pub fn queries() -> impl Iterator<Item = &'static QueryMap> {
    NOVA_MAPPING.queries().chain(ALLIANCE_MAPPING.queries())
}
