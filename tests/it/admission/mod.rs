//! What a delivery must pass before it changes anything: its source's credential (`auth`), the
//! path it comes by (`paths`), its route's bounds (`routes`), the replay defence (`replay`), and
//! the limits on its size, its pace, `serve`'s connections and where its values may send the
//! bridge's tokens (`limits`).

mod auth;
mod limits;
mod paths;
mod replay;
mod routes;
