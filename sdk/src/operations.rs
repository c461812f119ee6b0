use crate::Error;
use crate::bindings::exports::patchbay::connector::operations::{
    Error as WitError, InvocationContext,
};
use serde::{Serialize, de::DeserializeOwned};

/// A connector: a set of named operations. Implement it on a unit struct and
/// export it with [`export_connector!`](crate::export_connector).
///
/// ```no_run
/// struct Crm;
/// impl patchbay_sdk::Connector for Crm {
///     fn operations(ops: &mut patchbay_sdk::Operations<'_>) {
///         ops.register("ping", |_ctx, _input: serde_json::Value| Ok(serde_json::json!("pong")));
///     }
/// }
/// ```
pub trait Connector {
    /// Register every operation, by the name the manifest gives it.
    fn operations(ops: &mut Operations<'_>);

    /// Verify a webhook sent to one of the plugin's connections and map it
    /// to events (manifest: `[webhook] verify = "plugin"`); see
    /// [`webhooks`](crate::webhooks). A forged or stale webhook is
    /// [`Error::Unauthorized`]. Unless overridden, the plugin takes none.
    fn webhook(
        _ctx: &Context,
        _request: &crate::webhooks::WebhookRequest,
    ) -> Result<crate::webhooks::Verified, Error> {
        Err(Error::unsupported("this plugin takes no webhooks"))
    }
}

/// What the host told the plugin about the current invocation.
///
/// ```no_run
/// fn op(ctx: &patchbay_sdk::Context, _in: ()) -> Result<(), patchbay_sdk::Error> {
///     patchbay_sdk::log::info(&format!("serving {}", ctx.invocation_id()));
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    inner: InvocationContext,
}

impl Context {
    /// Unique id of this invocation.
    ///
    /// ```no_run
    /// # fn f(ctx: &patchbay_sdk::Context) { let _ = ctx.invocation_id(); }
    /// ```
    pub fn invocation_id(&self) -> &str {
        &self.inner.invocation_id
    }

    /// The caller's idempotency key, if any: forward it upstream on actions.
    ///
    /// ```no_run
    /// # fn f(ctx: &patchbay_sdk::Context) { let _ = ctx.idempotency_key(); }
    /// ```
    pub fn idempotency_key(&self) -> Option<&str> {
        self.inner.idempotency_key.as_deref()
    }

    /// The workspace this call runs in.
    ///
    /// ```no_run
    /// # fn f(ctx: &patchbay_sdk::Context) { let _ = ctx.workspace(); }
    /// ```
    pub fn workspace(&self) -> &str {
        &self.inner.workspace
    }

    /// The connection name within the workspace.
    ///
    /// ```no_run
    /// # fn f(ctx: &patchbay_sdk::Context) { let _ = ctx.connection(); }
    /// ```
    pub fn connection(&self) -> &str {
        &self.inner.connection
    }
}

enum Mode<'a> {
    Invoke {
        wanted: &'a str,
        input: &'a str,
        context: &'a Context,
        result: Option<Result<String, Error>>,
    },
    List(Vec<String>),
}

/// The registry a [`Connector`] fills. Registering does not allocate: during an
/// invocation only the operation whose name matches runs.
///
/// ```no_run
/// # fn f(ops: &mut patchbay_sdk::Operations<'_>) {
/// ops.register("echo", |_ctx, input: serde_json::Value| Ok(input));
/// # }
/// ```
pub struct Operations<'a> {
    mode: Mode<'a>,
}

impl Operations<'_> {
    /// Register operation `name`, decoding its JSON input into `I` and encoding
    /// its `O` output as JSON. An input that does not decode becomes
    /// [`Error::InvalidInput`] naming the problem.
    ///
    /// ```no_run
    /// # fn f(ops: &mut patchbay_sdk::Operations<'_>) {
    /// ops.register("double", |_ctx, n: i64| Ok(n * 2));
    /// # }
    /// ```
    pub fn register<I, O>(&mut self, name: &str, handler: fn(&Context, I) -> Result<O, Error>)
    where
        I: DeserializeOwned,
        O: Serialize,
    {
        self.dispatch(name, |context, input| run(handler, context, input));
    }

    /// Register operation `name` working on raw JSON text: the handler gets the
    /// input document as the host sent it and returns the output document as
    /// text. For pass-through transforms that should not pay for a typed decode;
    /// the host still validates the output against the operation's schema.
    ///
    /// ```no_run
    /// # fn f(ops: &mut patchbay_sdk::Operations<'_>) {
    /// ops.register_raw("identity", |_ctx, input| Ok(input.to_owned()));
    /// # }
    /// ```
    pub fn register_raw(
        &mut self,
        name: &str,
        handler: fn(&Context, &str) -> Result<String, Error>,
    ) {
        self.dispatch(name, handler);
    }

    /// Record `name` when listing; run `call` when it is the operation invoked.
    fn dispatch(&mut self, name: &str, call: impl FnOnce(&Context, &str) -> Result<String, Error>) {
        match &mut self.mode {
            Mode::List(names) => names.push(name.to_owned()),
            Mode::Invoke {
                wanted,
                input,
                context,
                result,
            } => {
                if result.is_none() && *wanted == name {
                    *result = Some(call(context, input));
                }
            }
        }
    }
}

fn run<I, O>(
    handler: fn(&Context, I) -> Result<O, Error>,
    ctx: &Context,
    input: &str,
) -> Result<String, Error>
where
    I: DeserializeOwned,
    O: Serialize,
{
    let input: I = serde_json::from_str(input).map_err(|e| Error::invalid_input(e.to_string()))?;
    let output = handler(ctx, input)?;
    serde_json::to_string(&output).map_err(|e| Error::internal(format!("encoding output: {e}")))
}

/// The context the host passed, wrapped.
pub(crate) fn context(inner: InvocationContext) -> Context {
    Context { inner }
}

/// Entry point used by the export macro.
#[doc(hidden)]
pub fn invoke<C: Connector>(
    context: InvocationContext,
    operation: &str,
    input: &str,
) -> Result<String, WitError> {
    let context = Context { inner: context };
    let mut ops = Operations {
        mode: Mode::Invoke {
            wanted: operation,
            input,
            context: &context,
            result: None,
        },
    };
    C::operations(&mut ops);
    match ops.mode {
        Mode::Invoke {
            result: Some(result),
            ..
        } => result.map_err(WitError::from),
        _ => Err(WitError::Unsupported(format!(
            "no operation named {operation:?}"
        ))),
    }
}

/// Entry point used by the export macro.
#[doc(hidden)]
pub fn operation_names<C: Connector>() -> Vec<String> {
    let mut ops = Operations {
        mode: Mode::List(Vec::new()),
    };
    C::operations(&mut ops);
    match ops.mode {
        Mode::List(names) => names,
        Mode::Invoke { .. } => Vec::new(),
    }
}
