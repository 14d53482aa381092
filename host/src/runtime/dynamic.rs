//! Calling a plugin's own-world functions by name with JSON values
//! (`Plugin::call_dynamic`, and `forgeone call` on any plugin): the
//! component's export types say how each JSON value becomes a component
//! value and back (the mapping is in `Plugin::call_dynamic`'s docs).

use serde_json::{Map, Value as Json, json};
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem, ResultType, Type, Variant};
use wasmtime::component::{Component, Val};

/// An exported function: its path (`interface#function`, or `function` at
/// the top level) and its type.
#[derive(Clone, Debug)]
pub(crate) struct Export {
    pub(crate) interface: Option<String>,
    pub(crate) function: String,
    pub(crate) ty: ComponentFunc,
}

impl Export {
    /// `interface#function`, or `function`.
    pub(crate) fn path(&self) -> String {
        match &self.interface {
            Some(interface) => format!("{interface}#{}", self.function),
            None => self.function.clone(),
        }
    }

    /// The path with its parameter and result types, for listings:
    /// `example:word-stats/stats#count(text: string, top: u32) -> ...`.
    pub(crate) fn signature(&self) -> String {
        let params: Vec<String> = self
            .ty
            .params()
            .map(|(name, ty)| format!("{name}: {}", type_name(&ty)))
            .collect();
        let results: Vec<String> = self.ty.results().map(|ty| type_name(&ty)).collect();
        let arrow = match results.len() {
            0 => String::new(),
            1 => format!(" -> {}", results[0]),
            _ => format!(" -> ({})", results.join(", ")),
        };
        format!("{}({}){arrow}", self.path(), params.join(", "))
    }

    /// Whether `name` names it: its full path, `function`, or
    /// `interface#function` with the interface's short name (`stats#count`
    /// for `example:word-stats/stats@0.1.0#count`).
    fn is_named(&self, name: &str) -> bool {
        if name == self.path() || name == self.function {
            return true;
        }
        match (&self.interface, name.split_once('#')) {
            (Some(interface), Some((short, function))) => {
                function == self.function && short_name(interface) == short
            }
            _ => false,
        }
    }
}

/// `stats` for `example:word-stats/stats@0.1.0`.
fn short_name(interface: &str) -> &str {
    let name = interface.rsplit('/').next().unwrap_or(interface);
    name.split('@').next().unwrap_or(name)
}

/// Every function `component` exports, at the top level and in its
/// exported interfaces, in export order.
pub(crate) fn exports(component: &Component, engine: &Engine) -> Vec<Export> {
    let mut found = Vec::new();
    for (name, item) in component.component_type().exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(ty) => found.push(Export {
                interface: None,
                function: name.to_string(),
                ty,
            }),
            ComponentItem::ComponentInstance(instance) => {
                for (function, item) in instance.exports(engine) {
                    if let ComponentItem::ComponentFunc(ty) = item.ty {
                        found.push(Export {
                            interface: Some(name.to_string()),
                            function: function.to_string(),
                            ty,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// The export `name` names, or why none (or more than one) does.
pub(crate) fn find<'e>(exports: &'e [Export], name: &str) -> Result<&'e Export, String> {
    let matches: Vec<&Export> = exports.iter().filter(|e| e.is_named(name)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "it exports no function `{name}`; it exports: {}",
            list(exports)
        )),
        many => Err(format!(
            "`{name}` names {} functions, give the interface: {}",
            many.len(),
            many.iter().map(|e| e.path()).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn list(exports: &[Export]) -> String {
    if exports.is_empty() {
        return "nothing".into();
    }
    exports
        .iter()
        .map(Export::path)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The arguments of `export` from `input`: an array (by position), an
/// object (by parameter name), or, for a function of one parameter, the
/// value itself.
pub(crate) fn arguments(export: &Export, input: &Json) -> Result<Vec<Val>, String> {
    let params: Vec<(&str, Type)> = export.ty.params().collect();
    let values: Vec<&Json> = match input {
        Json::Array(items) if params.len() != 1 || items.len() == 1 => items.iter().collect(),
        Json::Object(fields)
            if params.len() != 1 || params.iter().all(|(n, _)| fields.contains_key(*n)) =>
        {
            let mut values = Vec::with_capacity(params.len());
            for (name, _) in &params {
                values.push(
                    fields
                        .get(*name)
                        .ok_or_else(|| format!("no argument `{name}` in the input object"))?,
                );
            }
            if let Some(extra) = fields.keys().find(|k| !params.iter().any(|(n, _)| n == k)) {
                return Err(format!("`{}` takes no argument `{extra}`", export.path()));
            }
            values
        }
        Json::Null if params.is_empty() => Vec::new(),
        single if params.len() == 1 => vec![single],
        _ => {
            return Err(format!(
                "`{}` takes {} arguments: give them as an array or an object",
                export.path(),
                params.len()
            ));
        }
    };
    if values.len() != params.len() {
        return Err(format!(
            "`{}` takes {} argument(s), the input has {}",
            export.path(),
            params.len(),
            values.len()
        ));
    }
    params
        .iter()
        .zip(values)
        .map(|((name, ty), value)| {
            from_json(ty, value).map_err(|e| format!("argument `{name}`: {e}"))
        })
        .collect()
}

/// Placeholders for the results of `export`, to be overwritten by the call.
pub(crate) fn result_slots(export: &Export) -> Vec<Val> {
    export.ty.results().map(|_| Val::Bool(false)).collect()
}

/// The results as one JSON value: `null` for none, the value for one, an
/// array for several.
pub(crate) fn results_json(results: &[Val]) -> Json {
    match results {
        [] => Json::Null,
        [one] => to_json(one),
        many => Json::Array(many.iter().map(to_json).collect()),
    }
}

fn integer<T: TryFrom<i64> + TryFrom<u64>>(value: &Json, ty: &str) -> Result<T, String> {
    let out_of_range = || format!("{value} is not a {ty}");
    if let Some(i) = value.as_i64() {
        return T::try_from(i).map_err(|_| out_of_range());
    }
    if let Some(u) = value.as_u64() {
        return T::try_from(u).map_err(|_| out_of_range());
    }
    Err(out_of_range())
}

fn float(value: &Json) -> Result<f64, String> {
    value
        .as_f64()
        .ok_or_else(|| format!("{value} is not a number"))
}

fn text<'j>(value: &'j Json, what: &str) -> Result<&'j str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("{value} is not {what}"))
}

fn array<'j>(value: &'j Json, what: &str) -> Result<&'j [Json], String> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{value} is not {what}"))
}

/// A component value of type `ty` from JSON (the mapping in the module
/// docs).
pub(crate) fn from_json(ty: &Type, value: &Json) -> Result<Val, String> {
    Ok(match ty {
        Type::Bool => Val::Bool(
            value
                .as_bool()
                .ok_or_else(|| format!("{value} is not a bool"))?,
        ),
        Type::S8 => Val::S8(integer(value, "s8")?),
        Type::U8 => Val::U8(integer(value, "u8")?),
        Type::S16 => Val::S16(integer(value, "s16")?),
        Type::U16 => Val::U16(integer(value, "u16")?),
        Type::S32 => Val::S32(integer(value, "s32")?),
        Type::U32 => Val::U32(integer(value, "u32")?),
        Type::S64 => Val::S64(integer(value, "s64")?),
        Type::U64 => Val::U64(integer(value, "u64")?),
        Type::Float32 => Val::Float32(float(value)? as f32),
        Type::Float64 => Val::Float64(float(value)?),
        Type::Char => {
            let s = text(value, "a char")?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(format!("{value} is not one character")),
            }
        }
        Type::String => Val::String(text(value, "a string")?.to_string()),
        Type::List(list) => {
            let item = list.ty();
            Val::List(
                array(value, "an array")?
                    .iter()
                    .enumerate()
                    .map(|(i, v)| from_json(&item, v).map_err(|e| format!("[{i}]: {e}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Tuple(tuple) => {
            let items = array(value, "an array (a tuple)")?;
            let types: Vec<Type> = tuple.types().collect();
            if items.len() != types.len() {
                return Err(format!(
                    "a tuple of {} takes an array of {}, not {}",
                    types.len(),
                    types.len(),
                    items.len()
                ));
            }
            Val::Tuple(
                types
                    .iter()
                    .zip(items)
                    .enumerate()
                    .map(|(i, (t, v))| from_json(t, v).map_err(|e| format!("[{i}]: {e}")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Record(record) => {
            let fields = value
                .as_object()
                .ok_or_else(|| format!("{value} is not an object (a record)"))?;
            let mut out = Vec::new();
            for field in record.fields() {
                let v = fields
                    .get(field.name)
                    .ok_or_else(|| format!("the record has no field `{}`", field.name))?;
                out.push((
                    field.name.to_string(),
                    from_json(&field.ty, v).map_err(|e| format!(".{}: {e}", field.name))?,
                ));
            }
            if let Some(extra) = fields
                .keys()
                .find(|k| !record.fields().any(|f| f.name == k.as_str()))
            {
                return Err(format!("the record has no field `{extra}`"));
            }
            Val::Record(out)
        }
        Type::Variant(variant) => variant_from_json(variant, value)?,
        Type::Enum(enumeration) => {
            let name = text(value, "a string (an enum case)")?;
            if !enumeration.names().any(|n| n == name) {
                return Err(format!(
                    "no case `{name}`; the cases are {}",
                    enumeration.names().collect::<Vec<_>>().join(", ")
                ));
            }
            Val::Enum(name.to_string())
        }
        Type::Option(option) => match value {
            Json::Null => Val::Option(None),
            v => Val::Option(Some(Box::new(from_json(&option.ty(), v)?))),
        },
        Type::Result(result) => result_from_json(result, value)?,
        Type::Flags(flags) => {
            let mut set = Vec::new();
            for item in array(value, "an array of flag names")? {
                let name = text(item, "a flag name")?;
                if !flags.names().any(|n| n == name) {
                    return Err(format!("no flag `{name}`"));
                }
                set.push(name.to_string());
            }
            Val::Flags(set)
        }
        other => return Err(format!("a {} has no JSON form", type_name(other))),
    })
}

/// A `variant` from `"case"` or `{"case": payload}`.
fn variant_from_json(variant: &Variant, value: &Json) -> Result<Val, String> {
    let (name, payload) = case(value)?;
    let case = variant.cases().find(|c| c.name == name).ok_or_else(|| {
        format!(
            "no case `{name}`; the cases are {}",
            variant
                .cases()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let payload = match (&case.ty, payload) {
        (Some(ty), Some(v)) => Some(Box::new(
            from_json(ty, v).map_err(|e| format!("{name}: {e}"))?,
        )),
        (Some(_), None) => return Err(format!("case `{name}` takes a value")),
        (None, None | Some(Json::Null)) => None,
        (None, Some(_)) => return Err(format!("case `{name}` takes no value")),
    };
    Ok(Val::Variant(name.to_string(), payload))
}

/// A `result` from `{"ok": V}` or `{"err": E}`.
fn result_from_json(result: &ResultType, value: &Json) -> Result<Val, String> {
    let (name, payload) = case(value)?;
    let side = match name {
        "ok" => result.ok(),
        "err" => result.err(),
        other => {
            return Err(format!(
                "a result is {{\"ok\": ..}} or {{\"err\": ..}}, not `{other}`"
            ));
        }
    };
    let payload = match (side, payload) {
        (Some(ty), Some(v)) => Some(Box::new(from_json(&ty, v)?)),
        (Some(_), None) => return Err(format!("`{name}` takes a value")),
        (None, None | Some(Json::Null)) => None,
        (None, Some(_)) => return Err(format!("`{name}` takes no value")),
    };
    Ok(Val::Result(if name == "ok" {
        Ok(payload)
    } else {
        Err(payload)
    }))
}

/// A variant-like JSON value: `"name"` or `{"name": payload}`.
fn case(value: &Json) -> Result<(&str, Option<&Json>), String> {
    match value {
        Json::String(name) => Ok((name, None)),
        Json::Object(fields) if fields.len() == 1 => {
            let (name, payload) = fields.iter().next().expect("one field");
            Ok((name, Some(payload)))
        }
        other => Err(format!("{other} is not \"case\" or {{\"case\": value}}")),
    }
}

/// JSON for a component value (the mapping in the module docs).
pub(crate) fn to_json(value: &Val) -> Json {
    match value {
        Val::Bool(b) => json!(b),
        Val::S8(n) => json!(n),
        Val::U8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::Float32(f) => json!(f),
        Val::Float64(f) => json!(f),
        Val::Char(c) => json!(c.to_string()),
        Val::String(s) => json!(s),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Json::Array(items.iter().map(to_json).collect())
        }
        Val::Record(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Val::Variant(name, None) | Val::Enum(name) => json!(name),
        Val::Variant(name, Some(payload)) => json!({ name: to_json(payload) }),
        Val::Option(None) => Json::Null,
        Val::Option(Some(v)) => to_json(v),
        Val::Result(Ok(v)) => json!({"ok": v.as_deref().map_or(Json::Null, to_json)}),
        Val::Result(Err(e)) => json!({"err": e.as_deref().map_or(Json::Null, to_json)}),
        Val::Flags(names) => json!(names),
        Val::Map(pairs) => Json::Array(
            pairs
                .iter()
                .map(|(k, v)| json!([to_json(k), to_json(v)]))
                .collect(),
        ),
        Val::Resource(_) => json!("<resource>"),
        Val::Future(_) => json!("<future>"),
        Val::Stream(_) => json!("<stream>"),
        Val::ErrorContext(_) => json!("<error-context>"),
    }
}

/// A type as WIT spells it, for listings and errors.
pub(crate) fn type_name(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", type_name(&list.ty())),
        Type::Tuple(tuple) => format!(
            "tuple<{}>",
            tuple
                .types()
                .map(|t| type_name(&t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Record(record) => format!(
            "record {{ {} }}",
            record
                .fields()
                .map(|f| format!("{}: {}", f.name, type_name(&f.ty)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Variant(variant) => format!(
            "variant {{ {} }}",
            variant
                .cases()
                .map(|c| match &c.ty {
                    Some(t) => format!("{}({})", c.name, type_name(t)),
                    None => c.name.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Enum(e) => format!("enum {{ {} }}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Flags(f) => format!("flags {{ {} }}", f.names().collect::<Vec<_>>().join(", ")),
        Type::Option(o) => format!("option<{}>", type_name(&o.ty())),
        Type::Result(r) => {
            let side = |t: Option<Type>| t.map_or("_".to_string(), |t| type_name(&t));
            format!("result<{}, {}>", side(r.ok()), side(r.err()))
        }
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Map(_) => "map".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
        Type::FixedLengthList(_) => "fixed-length-list".into(),
    }
}
