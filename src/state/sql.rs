//! One SQL surface over the two databases the state can live in: the embedded SQLite file
//! (`rusqlite`) and a PostgreSQL server (`tokio-postgres`, connections from a `deadpool`
//! pool). The store's code is written once against it: [`Connection::execute`],
//! [`Connection::query_row`], prepared [`Statement`]s, [`Transaction`]s, rows read by
//! [`Row::get`], in the shape of `rusqlite`'s API, which it was first written for.
//!
//! The SQL itself is the dialect both accept: parameters as `?N` (rewritten to PostgreSQL's
//! `$N` once per statement), upserts as `ON CONFLICT`, `RETURNING`, no `rowid` but a column
//! of that name. Values cross as [`Value`]s: a parameter is encoded as the type PostgreSQL
//! inferred for it (an integer for a `BIGINT` or an `INTEGER` column alike), a column is read
//! by the type it has, so the rows map the same from both.
//!
//! PostgreSQL's client is asynchronous and the store is blocking (called off the async
//! workers): the pool lives on a small runtime of its own, on which connections are made and
//! driven, and a caller waits on a statement's answer with a thread park. Calls only `rusqlite`,
//! `tokio-postgres` and `deadpool-postgres`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// What a database said, or a value that did not fit the type it was read as.
#[derive(Debug)]
pub enum Error {
    Sqlite(rusqlite::Error),
    Postgres(tokio_postgres::Error),
    /// No connection could be had from the pool (the server is down, or every connection is
    /// taken for longer than the pool waits).
    Pool(String),
    /// A query that must answer one row answered none.
    NoRows,
    /// A column's value does not convert to the type it is read as.
    Type(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sqlite(e) => write!(f, "SQLite: {e}"),
            Error::Postgres(e) => match e.as_db_error() {
                Some(db) => write!(f, "PostgreSQL: {}: {}", db.code().code(), db.message()),
                None => write!(f, "PostgreSQL: {e}"),
            },
            Error::Pool(e) => write!(f, "PostgreSQL pool: {e}"),
            Error::NoRows => f.write_str("query returned no rows"),
            Error::Type(e) => write!(f, "column type: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Error::NoRows,
            e => Error::Sqlite(e),
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        Error::Postgres(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// `query_row`'s "no row" as `None`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A value as the store passes and reads it: SQLite's five storage classes.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    /// Arrays, for PostgreSQL's `unnest` (whole batches in one statement): SQLite has none.
    Texts(Vec<String>),
    Ints(Vec<Option<i64>>),
}

/// A parameter of a statement.
pub trait ToArg {
    fn to_value(&self) -> Value;
}

macro_rules! int_args {
    ($($t:ty),*) => {$(
        impl ToArg for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_args!(i64, i32, i16, i8, u32, u16, u8);

impl ToArg for u64 {
    /// Counts and sizes kept by the store stay far below 2⁶³; one beyond saturates.
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToArg for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToArg for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToArg for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToArg for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToArg for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToArg for Vec<String> {
    fn to_value(&self) -> Value {
        Value::Texts(self.clone())
    }
}

impl ToArg for Vec<Option<i64>> {
    fn to_value(&self) -> Value {
        Value::Ints(self.clone())
    }
}

impl<T: ToArg + ?Sized> ToArg for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToArg> ToArg for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToArg::to_value)
    }
}

/// The parameters of one execution of a statement.
pub trait Params {
    fn values(&self) -> Vec<Value>;
}

impl Params for &[&dyn ToArg] {
    fn values(&self) -> Vec<Value> {
        self.iter().map(|a| a.to_value()).collect()
    }
}

impl Params for [&dyn ToArg; 0] {
    fn values(&self) -> Vec<Value> {
        Vec::new()
    }
}

macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToArg> Params for [T; $n] {
            fn values(&self) -> Vec<Value> {
                self.iter().map(ToArg::to_value).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8);

/// Parameters of different types: `params![a, b]`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::state::sql::ToArg] };
    ($($x:expr),+ $(,)?) => {
        &[$(&$x as &dyn $crate::state::sql::ToArg),+] as &[&dyn $crate::state::sql::ToArg]
    };
}
pub(crate) use params;

/// A value read from a column.
pub trait FromColumn: Sized {
    fn from_value(v: Value) -> Result<Self>;
}

fn mismatch<T>(v: &Value, want: &str) -> Result<T> {
    Err(Error::Type(format!("{v:?} read as {want}")))
}

macro_rules! int_columns {
    ($($t:ty),*) => {$(
        impl FromColumn for $t {
            fn from_value(v: Value) -> Result<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(i)
                        .map_err(|_| Error::Type(format!("{i} out of range of {}", stringify!($t)))),
                    v => mismatch(&v, stringify!($t)),
                }
            }
        }
    )*};
}
int_columns!(i64, i32, i16, u64, u32, u16, u8, usize);

impl FromColumn for bool {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Int(i) => Ok(i != 0),
            v => mismatch(&v, "bool"),
        }
    }
}

impl FromColumn for f64 {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Real(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            v => mismatch(&v, "f64"),
        }
    }
}

impl FromColumn for String {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Text(s) => Ok(s),
            v => mismatch(&v, "text"),
        }
    }
}

impl FromColumn for Vec<u8> {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Blob(b) => Ok(b),
            Value::Text(s) => Ok(s.into_bytes()),
            v => mismatch(&v, "blob"),
        }
    }
}

impl<T: FromColumn> FromColumn for Option<T> {
    fn from_value(v: Value) -> Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A column's position; integer literals default to `i32`, which is why it is one.
pub trait ColumnIndex {
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl ColumnIndex for i32 {
    fn index(self) -> usize {
        usize::try_from(self).unwrap_or(usize::MAX)
    }
}

/// One row of an answer.
pub struct Row<'a>(RowOf<'a>);

enum RowOf<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `i` as `T`. The `_` of `get::<_, T>` is the index's type.
    pub fn get<I: ColumnIndex, T: FromColumn>(&self, i: I) -> Result<T> {
        let i = i.index();
        let value = match &self.0 {
            RowOf::Sqlite(row) => {
                use rusqlite::types::ValueRef;
                match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Real(f) => Value::Real(f),
                    ValueRef::Text(t) => Value::Text(
                        std::str::from_utf8(t)
                            .map_err(|e| Error::Type(format!("column {i}: {e}")))?
                            .to_owned(),
                    ),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                }
            }
            RowOf::Postgres(row) => pg_value(row, i)?,
        };
        T::from_value(value)
    }
}

fn pg_value(row: &tokio_postgres::Row, i: usize) -> Result<Value> {
    let ty = row
        .columns()
        .get(i)
        .ok_or_else(|| Error::Type(format!("no column {i}")))?
        .type_()
        .clone();
    let value = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|n| Value::Int(n.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|n| Value::Int(n.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|b| Value::Int(b.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map(|f| Value::Real(f.into())),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        other => {
            return Err(Error::Type(format!(
                "column {i} is {other}: cast it to BIGINT, DOUBLE PRECISION or TEXT"
            )));
        }
    };
    Ok(value.unwrap_or(Value::Null))
}

impl ToSql for Value {
    /// Encoded as the type the server inferred for the parameter: the store passes an
    /// integer for `BIGINT`, `INTEGER` and `SMALLINT` columns alike.
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(n), &Type::INT8) => n.to_sql(ty, out),
            (Value::Int(n), &Type::INT4) => i32::try_from(*n)?.to_sql(ty, out),
            (Value::Int(n), &Type::INT2) => i16::try_from(*n)?.to_sql(ty, out),
            (Value::Int(n), &Type::BOOL) => (*n != 0).to_sql(ty, out),
            (Value::Int(n), &Type::FLOAT8) => (*n as f64).to_sql(ty, out),
            (Value::Int(n), &Type::TEXT | &Type::VARCHAR) => n.to_string().to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                s.as_str().to_sql(ty, out)
            }
            (Value::Text(s), &Type::BYTEA) => s.as_bytes().to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (Value::Texts(v), &Type::TEXT_ARRAY | &Type::VARCHAR_ARRAY) => v.to_sql(ty, out),
            (Value::Ints(v), &Type::INT8_ARRAY) => v.to_sql(ty, out),
            (v, ty) => Err(format!("{v:?} passed for a parameter of type {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `?N` parameters as `$N`, outside quoted text and identifiers.
fn dollar_parameters(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Wait for a future on this thread. The PostgreSQL client's futures wait on channels to the
/// connection tasks, which run on the pool's runtime, so no runtime is needed here.
fn wait<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// The runtime on which every pool's connections are made and driven: two threads, for the
/// process.
fn postgres_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("state-postgres")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Pool(format!("runtime: {e}")))
}

/// Connections to one PostgreSQL database.
pub struct Pool {
    pool: deadpool_postgres::Pool,
    /// Where it connects, without the password: for messages.
    pub(crate) name: String,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pool({})", self.name)
    }
}

impl Pool {
    /// A pool of at most `size` connections to `url` (`postgres://…`), made when first asked
    /// for; a caller waits at most `wait` for one.
    pub fn new(url: &str, size: usize, wait: Duration) -> Result<Pool> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Pool(format!("connection URL: {e}")))?;
        let name = describe(&config);
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                // A connection whose server went away is closed, and is dropped rather than
                // handed out again.
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .recycle_timeout(Some(wait))
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;
        Ok(Pool { pool, name })
    }

    /// A connection of the pool, made on the pool's runtime when none is idle. It holds one
    /// of the pool's connections, and takes another when that one's server went away.
    pub fn connect(&self) -> Result<Connection> {
        Ok(Connection(Backend::Postgres(Session {
            client: RefCell::new(checkout(&self.pool, &self.name)?),
            pool: self.pool.clone(),
            name: self.name.clone(),
            transactions: Cell::new(0),
        })))
    }
}

/// One of `pool`'s connections, had on the pool's runtime (where a new one is made).
fn checkout(pool: &deadpool_postgres::Pool, name: &str) -> Result<deadpool_postgres::Object> {
    let runtime = postgres_runtime()?;
    let pool = pool.clone();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(pool.get().await);
    });
    rx.recv()
        .map_err(|_| Error::Pool("the pool's runtime stopped".into()))?
        .map_err(|e| Error::Pool(format!("{name}: {e}")))
}

/// `user@host:port/dbname` of a configuration: what messages name.
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// A connection to either database.
pub struct Connection(Backend);

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Session),
}

struct Session {
    client: RefCell<deadpool_postgres::Object>,
    pool: deadpool_postgres::Pool,
    name: String,
    /// Transactions open on `client` (0 or 1): a connection lost within one is not replaced
    /// until it ends, so that nothing after the loss runs outside it.
    transactions: Cell<u32>,
}

impl Session {
    /// The connection, replaced first if its server went away (a restart, a fail-over)
    /// between transactions: a store held for long recovers once the server is back.
    fn client(&self) -> Result<std::cell::Ref<'_, deadpool_postgres::Object>> {
        if self.transactions.get() == 0 && self.client.borrow().is_closed() {
            let fresh = checkout(&self.pool, &self.name)?;
            *self.client.borrow_mut() = fresh;
        }
        Ok(self.client.borrow())
    }

    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        Ok(wait(
            self.client()?.prepare_cached(&dollar_parameters(sql)),
        )?)
    }
}

/// Borrowed parameters as the client takes them.
fn pg_args(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Connection {
    /// A SQLite connection (the caller sets its pragmas).
    pub fn sqlite(conn: rusqlite::Connection) -> Connection {
        Connection(Backend::Sqlite(conn))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.0, Backend::Postgres(_))
    }

    /// The SQLite connection, for what only SQLite has (pragmas, its schema's history).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.0 {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    /// Run one statement; the rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Run statements separated by `;`, without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.0 {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Backend::Postgres(s) => Ok(wait(s.client()?.batch_execute(sql))?),
        }
    }

    /// The first row of an answer, mapped; [`Error::NoRows`] when there is none.
    pub fn query_row<P: Params, T>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// A statement, prepared once per connection.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        match &self.0 {
            Backend::Sqlite(c) => Ok(Statement(StatementOf::Sqlite(c.prepare_cached(sql)?))),
            Backend::Postgres(s) => Ok(Statement(StatementOf::Postgres {
                session: s,
                statement: s.statement(sql)?,
            })),
        }
    }

    /// As [`Connection::prepare_cached`]: the few statements built at run time are a few
    /// shapes each.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare_cached(sql)
    }

    /// A transaction: committed by [`Transaction::commit`], rolled back when dropped before.
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.begin("BEGIN")
    }

    /// A transaction that reads one snapshot, for a consistent read of several tables (SQLite:
    /// a deferred transaction; PostgreSQL: repeatable read).
    pub fn unchecked_transaction(&self) -> Result<Transaction<'_>> {
        match &self.0 {
            Backend::Sqlite(_) => self.begin("BEGIN"),
            Backend::Postgres(_) => self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ"),
        }
    }

    fn begin(&self, sql: &str) -> Result<Transaction<'_>> {
        self.execute_batch(sql)?;
        if let Backend::Postgres(s) = &self.0 {
            s.transactions.set(s.transactions.get() + 1);
        }
        Ok(Transaction {
            conn: self,
            done: false,
        })
    }
}

impl Connection {
    fn ended(&self) {
        if let Backend::Postgres(s) = &self.0 {
            s.transactions.set(s.transactions.get().saturating_sub(1));
        }
    }
}

/// A transaction of a [`Connection`], which it dereferences to.
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        let committed = self.conn.execute_batch("COMMIT");
        self.conn.ended();
        committed
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A rollback that fails leaves nothing committed either way.
            let _ = self.conn.execute_batch("ROLLBACK");
            self.conn.ended();
        }
    }
}

/// A prepared statement.
pub struct Statement<'c>(StatementOf<'c>);

enum StatementOf<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    Postgres {
        session: &'c Session,
        statement: tokio_postgres::Statement,
    },
}

impl Statement<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let values = params.values();
        match &mut self.0 {
            StatementOf::Sqlite(s) => {
                Ok(s.execute(rusqlite::params_from_iter(sqlite_values(&values)?))?)
            }
            StatementOf::Postgres { session, statement } => {
                let n = wait(session.client()?.execute(&*statement, &pg_args(&values)))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Every row of the answer, each mapped by `f` (read whole before the first is mapped).
    pub fn query_map<P: Params, T>(
        &mut self,
        params: P,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let values = params.values();
        let mut out = Vec::new();
        match &mut self.0 {
            StatementOf::Sqlite(s) => {
                let mut rows = s.query(rusqlite::params_from_iter(sqlite_values(&values)?))?;
                while let Some(row) = rows.next()? {
                    let mapped = f(&Row(RowOf::Sqlite(row)));
                    let failed = mapped.is_err();
                    out.push(mapped);
                    if failed {
                        break;
                    }
                }
            }
            StatementOf::Postgres { session, statement } => {
                let rows = wait(session.client()?.query(&*statement, &pg_args(&values)))?;
                for row in &rows {
                    let mapped = f(&Row(RowOf::Postgres(row)));
                    let failed = mapped.is_err();
                    out.push(mapped);
                    if failed {
                        break;
                    }
                }
            }
        }
        Ok(out.into_iter())
    }

    /// The first row of the answer, mapped; [`Error::NoRows`] when there is none.
    pub fn query_row<P: Params, T>(
        &mut self,
        params: P,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        let values = params.values();
        match &mut self.0 {
            StatementOf::Sqlite(s) => {
                let mut rows = s.query(rusqlite::params_from_iter(sqlite_values(&values)?))?;
                match rows.next()? {
                    Some(row) => f(&Row(RowOf::Sqlite(row))),
                    None => Err(Error::NoRows),
                }
            }
            StatementOf::Postgres { session, statement } => {
                match wait(session.client()?.query_opt(&*statement, &pg_args(&values)))? {
                    Some(row) => f(&Row(RowOf::Postgres(&row))),
                    None => Err(Error::NoRows),
                }
            }
        }
    }
}

/// The values as SQLite takes them; it has no arrays.
fn sqlite_values(values: &[Value]) -> Result<Vec<rusqlite::types::Value>> {
    use rusqlite::types::Value as V;
    values
        .iter()
        .map(|v| match v {
            Value::Null => Ok(V::Null),
            Value::Int(n) => Ok(V::Integer(*n)),
            Value::Real(f) => Ok(V::Real(*f)),
            Value::Text(s) => Ok(V::Text(s.clone())),
            Value::Blob(b) => Ok(V::Blob(b.clone())),
            Value::Texts(_) | Value::Ints(_) => Err(Error::Type(
                "an array passed to SQLite (arrays are for PostgreSQL's statements)".into(),
            )),
        })
        .collect()
}

/// Pools by URL and size, so that the stores of one process share their connections while
/// any of them is in use; the last one's drop closes them.
pub fn shared_pool(url: &str, size: usize, wait: Duration) -> Result<Arc<Pool>> {
    type Pools = Mutex<HashMap<(String, usize), std::sync::Weak<Pool>>>;
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let pools = POOLS.get_or_init(Default::default);
    let mut pools = pools
        .lock()
        .map_err(|_| Error::Pool("pool registry poisoned".into()))?;
    pools.retain(|_, pool| pool.strong_count() > 0);
    let key = (url.to_owned(), size);
    if let Some(pool) = pools.get(&key).and_then(std::sync::Weak::upgrade) {
        return Ok(pool);
    }
    let pool = Arc::new(Pool::new(url, size, wait)?);
    pools.insert(key, Arc::downgrade(&pool));
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_parameters("SELECT a FROM t WHERE b = ?1 AND c = '?' AND \"d?\" = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND \"d?\" = $12"
        );
    }

    #[test]
    fn the_same_code_reads_and_writes_sqlite() {
        let mut conn = Connection::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
            .unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO t (id, name, data) VALUES (?1, ?2, ?3)",
            params![7u32, "seven", vec![1u8, 2]],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO t (id, name) VALUES (?1, ?2)",
            params![8i64, None::<String>],
        )
        .unwrap();
        tx.commit().unwrap();
        {
            let tx = conn.transaction().unwrap();
            tx.execute("DELETE FROM t", []).unwrap();
            // Dropped: rolled back.
        }
        let rows: Vec<(u32, Option<String>, Option<Vec<u8>>)> = conn
            .prepare("SELECT id, name, data FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![(7, Some("seven".into()), Some(vec![1, 2])), (8, None, None)]
        );
        let missing = conn
            .query_row("SELECT name FROM t WHERE id = ?1", [9], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(missing, None);
        assert!(matches!(
            conn.query_row("SELECT name FROM t WHERE id = 7", [], |r| r
                .get::<_, i64>(0)),
            Err(Error::Type(_))
        ));
    }
}
