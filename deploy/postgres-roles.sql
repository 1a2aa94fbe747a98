-- PostgreSQL roles for Historian, least privilege. docs/security.md explains each grant.
--
-- Run it once, as a superuser (or a role with CREATEROLE that owns the database), connected to
-- the database Historian uses, before the first `historian migrate`:
--
--   psql -v ON_ERROR_STOP=1 -d historian -f deploy/postgres-roles.sql
--
-- Then give the login roles passwords (\password historian_owner, \password historian_runtime)
-- or certificates, and point Historian at them:
--   historian migrate   postgres_url = postgresql://historian_owner@host/historian
--   historian run, and every other command
--                       postgres_url = postgresql://historian_runtime@host/historian
--
-- historian_owner   creates and upgrades the schema (`historian migrate`): it owns every table,
--                   view and function Historian makes, and nothing else.
-- historian_runtime reads and writes rows: SELECT, INSERT, UPDATE, DELETE on Historian's tables,
--                   its identity sequences and its store functions. No DDL (it cannot create,
--                   alter or drop anything), no TRUNCATE, no superuser. `historian run` under it
--                   waits, logging why, while the schema is behind, until the owner migrates it.
-- historian_readonly a group for analysts: SELECT only. GRANT historian_readonly TO alice;

CREATE ROLE historian_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE ROLE historian_runtime LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE ROLE historian_readonly NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;

-- Only these roles (and superusers) connect to the database. psql sets :DBNAME to it.
REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"DBNAME" TO historian_owner, historian_runtime, historian_readonly;

-- Only the owner creates objects in the schema (PostgreSQL 15 no longer lets everyone).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO historian_owner;
GRANT USAGE ON SCHEMA public TO historian_runtime, historian_readonly;

-- What `historian migrate` creates as historian_owner is granted as it is created.
ALTER DEFAULT PRIVILEGES FOR ROLE historian_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO historian_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE historian_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO historian_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE historian_owner IN SCHEMA public
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE historian_owner IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO historian_runtime;
ALTER DEFAULT PRIVILEGES FOR ROLE historian_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO historian_readonly;

-- A database that Historian already migrated under another role: hand its objects to the owner
-- first (as a superuser), and the grants above then cover them too:
--   REASSIGN OWNED BY <the old role> TO historian_owner;   -- everything that role owns
--   GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO historian_runtime;
--   GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO historian_runtime;
--   GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO historian_runtime;
--   GRANT SELECT ON ALL TABLES IN SCHEMA public TO historian_readonly;
