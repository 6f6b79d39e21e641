-- The queries a template version runs before it renders: a JSON array of
-- {name, datasource, text, params}.
ALTER TABLE template_versions ADD COLUMN queries TEXT NOT NULL DEFAULT '[]';
