package agent

// captureSQL installs DDL capture on the source. DDL is not in the logical
// stream, so an event trigger turns each DDL statement into a
// transactional logical message (prefix wayback.ddl) that arrives in commit
// order inside its own transaction; replay runs the statement there.
//
// Two functions, for safety:
//   - wayback.capture_ddl runs as the user issuing the DDL, so it sees that
//     user's search_path and can give a new table without a key REPLICA
//     IDENTITY FULL (otherwise, published FOR ALL TABLES, the table would
//     reject UPDATE and DELETE on the primary).
//   - wayback.emit_ddl is SECURITY DEFINER (emitting logical messages needs
//     privileges ordinary users lack) with a fixed search_path, and refuses
//     to run outside an event trigger, so nobody can forge DDL messages
//     that a restore would execute.
//
// The pad. PostgreSQL 15 positions a logical message in its transaction
// at the END of the message's WAL record, which is the START of the next
// record, while a row change is positioned at the start of its own
// record. When the next record is a change made in another
// subtransaction of the same transaction (CREATE TABLE t inside SAVEPOINT
// a; RELEASE a; INSERT INTO t), both carry the same LSN, and the reorder
// buffer, merging the subtransactions' change lists by LSN, may send
// either first: sometimes the INSERT arrived before the DDL that creates
// its table, and restore failed (relation does not exist). Which one wins
// depends on what else the transaction's lists hold at that moment (a
// snapshot change queued when another session commits a catalog change
// while the DDL runs flips it), so it shows up under load. emit_ddl
// therefore writes a second, non-transactional message right after the
// DDL message: the DDL message's position is then the start of that
// record, which is no change of any transaction, so the order is strict.
// A non-transactional message arrives outside any transaction and is not
// archived. The same tie is why an earlier capture path, which emitted
// from inside a PL/pgSQL EXCEPTION block (a subtransaction), saw
// CREATE TABLE t; INSERT INTO t arrive as INSERT, then the DDL.
//
// The capture path still has no exception handler around the DDL
// message. Only the REPLICA IDENTITY fix, which can fail (not the owner),
// is guarded, and its message is emitted outside the guard.
//
// A query string with several statements fires the trigger once per DDL
// statement; "n" counts them within the string so replay runs exactly the
// n-th DDL statement at each message.
const captureSQL = `
CREATE SCHEMA IF NOT EXISTS wayback;
GRANT USAGE ON SCHEMA wayback TO PUBLIC;

CREATE OR REPLACE FUNCTION wayback.emit_ddl(payload text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  -- Errors unless called while an event trigger runs.
  PERFORM 1 FROM pg_catalog.pg_event_trigger_ddl_commands() LIMIT 1;
  PERFORM pg_catalog.pg_logical_emit_message(true, 'wayback.ddl', payload);
  -- Ends the DDL message's record with one that is no change (see
  -- "The pad" in wayback's agent/ddl.go).
  PERFORM pg_catalog.pg_logical_emit_message(false, 'wayback.pad', '');
END
$fn$;
REVOKE ALL ON FUNCTION wayback.emit_ddl(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION wayback.emit_ddl(text) TO PUBLIC;

CREATE OR REPLACE FUNCTION wayback.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  q text;
  key text;
  prev text;
  n int := 1;
  obj record;
  fixed boolean;
BEGIN
  IF pg_catalog.current_setting('wayback.in_capture', true) OPERATOR(pg_catalog.=) 'on' THEN
    RETURN; -- DDL run by this trigger itself
  END IF;
  q := pg_catalog.current_query();
  key := pg_catalog.md5(COALESCE(q, '')) OPERATOR(pg_catalog.||) pg_catalog.txid_current()::text;
  prev := pg_catalog.current_setting('wayback.ddl_seq', true);
  IF prev IS NOT NULL AND pg_catalog.split_part(prev, ':', 1) OPERATOR(pg_catalog.=) key THEN
    n := pg_catalog.split_part(prev, ':', 2)::int OPERATOR(pg_catalog.+) 1;
  END IF;
  PERFORM pg_catalog.set_config('wayback.ddl_seq', key OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) n::text, true);
  PERFORM wayback.emit_ddl(pg_catalog.json_build_object(
    'query', q, 'n', n, 'tag', tg_tag,
    'search_path', pg_catalog.current_setting('search_path'),
    'role', current_user,
    -- Literals in DDL (defaults, partition bounds, check constraints) are
    -- parsed with these; replay parses them the same way.
    'settings', pg_catalog.json_build_object(
      'DateStyle', pg_catalog.current_setting('DateStyle'),
      'IntervalStyle', pg_catalog.current_setting('IntervalStyle'),
      'TimeZone', pg_catalog.current_setting('TimeZone'),
      'standard_conforming_strings', pg_catalog.current_setting('standard_conforming_strings'),
      'lc_monetary', pg_catalog.current_setting('lc_monetary')),
    -- CREATE TABLE AS and SELECT INTO: the table whose rows the stream
    -- carries ahead of this message.
    'tables', (SELECT pg_catalog.json_agg(pg_catalog.json_build_object('s', n.nspname, 'n', c.relname))
               FROM pg_catalog.pg_event_trigger_ddl_commands() d
               JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) d.objid
               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
               WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                 AND d.command_tag OPERATOR(pg_catalog.=) ANY (ARRAY['CREATE TABLE AS', 'SELECT INTO'])),
    -- ALTER TABLE ... ADD COLUMN ... DEFAULT now(): existing rows take a
    -- value computed now and stored as the column's "missing value", which
    -- is in no stream; replay checks its own against this one.
    'missing', (SELECT pg_catalog.json_agg(pg_catalog.json_build_object('s', n.nspname, 'n', c.relname, 'c', a.attname, 'v', a.attmissingval::text))
                FROM pg_catalog.pg_event_trigger_ddl_commands() d
                JOIN LATERAL (SELECT d.objid AS relid UNION SELECT t.relid FROM pg_catalog.pg_partition_tree(d.objid) t) p ON true
                JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.relid
                JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
                WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.command_tag OPERATOR(pg_catalog.=) 'ALTER TABLE'
                  AND a.atthasmissing AND NOT a.attisdropped))::text);
  -- Tables left without a key or replica identity would make the
  -- primary's UPDATE/DELETE fail.
  FOR obj IN SELECT c.oid::regclass AS rel FROM pg_catalog.pg_event_trigger_ddl_commands() d
             JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) d.objid
             WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass
               AND c.relkind OPERATOR(pg_catalog.=) 'r' AND c.relpersistence OPERATOR(pg_catalog.=) 'p'
               AND c.relreplident OPERATOR(pg_catalog.=) 'd'
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisprimary)
             UNION
             -- DROP INDEX of a REPLICA IDENTITY USING INDEX index leaves the
             -- table with no identity; a drop names no object here, so look
             -- for such tables anywhere (a cheap scan of pg_class).
             SELECT c.oid::regclass FROM pg_catalog.pg_class c
             WHERE c.relkind OPERATOR(pg_catalog.=) 'r' AND c.relpersistence OPERATOR(pg_catalog.=) 'p'
               AND c.relreplident OPERATOR(pg_catalog.=) 'i'
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisreplident)
  LOOP
    fixed := false;
    BEGIN
      PERFORM pg_catalog.set_config('wayback.in_capture', 'on', true);
      EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY FULL', obj.rel);
      PERFORM pg_catalog.set_config('wayback.in_capture', 'off', true);
      fixed := true;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'wayback: could not set REPLICA IDENTITY FULL on %: %; UPDATE and DELETE on it will fail until it has a primary key', obj.rel, SQLERRM;
    END;
    IF fixed THEN
      PERFORM wayback.emit_ddl(pg_catalog.json_build_object(
        'query', pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY FULL', obj.rel), 'n', 1, 'tag', 'ALTER TABLE',
        'search_path', pg_catalog.current_setting('search_path'), 'role', current_user, 'synthetic', true)::text);
    END IF;
  END LOOP;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS wayback_capture_ddl;
CREATE EVENT TRIGGER wayback_capture_ddl ON ddl_command_end EXECUTE FUNCTION wayback.capture_ddl();
`
